// Real VMs on a 2-core host: test classes run one after another, so leak counts and timing bounds see only their own work.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
