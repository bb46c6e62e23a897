// Real VMs on a 2-core host, and fd/thread leak checks: one test at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
