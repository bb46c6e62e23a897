using System.Text.Json;
using Faultline.Guest.Probe;
using Faultline.TestKit;

namespace Faultline.Cli.Tests;

public sealed class ProbeCommandTests
{
    private static readonly string[] FaultWords = ["memory_fault", "mmio", "efault", "none"];

    /// <summary>kvm_pvm: CPL0 is emulated, a missing page is an MMIO exit at CPL0 and a bare -EFAULT at CPL3 (HOST.md).</summary>
    private static bool OnKvmPvm => Directory.Exists("/sys/module/kvm_pvm");

    [KvmFact]
    public void Probe_json_has_the_required_keys_with_their_types_and_consistent_findings()
    {
        var r = CliRunner.Run("probe", "--json");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.DoesNotContain("faultline:", r.Stderr);   // --json alone: JSON on stdout, the tables on stderr, no error
        Assert.Contains("Missing page, SIGBUS userfaultfd", r.Stderr);
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;

        Assert.Equal(JsonValueKind.Number, root.GetProperty("kvm_api_version").ValueKind);
        Assert.Equal(12, root.GetProperty("kvm_api_version").GetInt32());

        var caps = root.GetProperty("capabilities");
        Assert.Equal(JsonValueKind.Object, caps.ValueKind);
        foreach (var cap in HostProbe.ReportedCapabilities)
            Assert.True(caps.GetProperty(cap.ToString()).TryGetInt32(out _), $"capability {cap} is not an int");
        Assert.True(caps.GetProperty("NrMemslots").GetInt32() > 0);   // every KVM has memslots: the values are real answers

        var features = root.GetProperty("uffd_features");
        Assert.Equal(JsonValueKind.Array, features.ValueKind);
        var names = features.EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Contains("Sigbus", names);   // the probe's own fault experiment needs it, and ran
        Assert.Contains("MissingShmem", names);

        Assert.True(root.GetProperty("native_userfault").ValueKind is JsonValueKind.True or JsonValueKind.False);
        var emulated = root.GetProperty("cpl0_emulated");
        Assert.True(emulated.ValueKind is JsonValueKind.True or JsonValueKind.False);

        // cpl0_emulated follows from the measured rates
        var rates = root.GetProperty("instruction_rate");
        var cpl0 = rates.GetProperty("cpl0").GetProperty("per_second").GetDouble();
        var cpl3 = rates.GetProperty("cpl3").GetProperty("per_second").GetDouble();
        Assert.True(cpl3 > 0, "the CPL3 spin made no progress");
        Assert.Equal(cpl3 > ProbeReport.EmulationRatio * cpl0, emulated.GetBoolean());

        var faults = root.GetProperty("fault_exit");
        var detail = root.GetProperty("fault_exit_detail");
        foreach (var level in new[] { "cpl0", "cpl3" })
        {
            var word = faults.GetProperty(level).GetString();
            Assert.Contains(word, FaultWords);
            var d = detail.GetProperty(level);
            Assert.Equal(word, d.GetProperty("kind").GetString());
            if (word is "mmio" or "memory_fault")
            {
                Assert.True(d.GetProperty("address_reported").GetBoolean());
                Assert.True(d.GetProperty("address_matches").GetBoolean(), $"{level}: the exit's address is not the page the guest touched");
            }
            if (word == "efault") Assert.False(d.GetProperty("address_reported").GetBoolean());
        }

        if (OnKvmPvm)
        {
            Assert.True(emulated.GetBoolean());
            Assert.Equal("mmio", faults.GetProperty("cpl0").GetString());
            Assert.Equal("efault", faults.GetProperty("cpl3").GetString());
            Assert.False(root.GetProperty("native_userfault").GetBoolean());
        }
    }

    [KvmFact]
    public void Probe_without_json_prints_a_table_of_what_it_measured()
    {
        var r = CliRunner.Run("probe");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("Missing page, SIGBUS userfaultfd", r.Stdout);
        Assert.Contains("KVM_CAP_USER_MEMORY2", r.Stdout);
        Assert.Contains("Sigbus", r.Stdout);
        if (OnKvmPvm)
        {
            Assert.Contains("mmio at 0x", r.Stdout);
            Assert.Contains("efault (no address)", r.Stdout);
            Assert.Contains("emulated", r.Stdout);
        }
        Assert.DoesNotContain("\u001b[", r.Stdout);   // not a terminal: no ANSI escapes
    }

    [KvmFact]
    public void Probe_ends_with_the_engines_this_host_runs_and_the_one_auto_picks()
    {
        var r = CliRunner.Run("probe", "--json", "-");
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        var root = doc.RootElement;
        var engines = root.GetProperty("engines");
        foreach (var backing in new[] { "anon", "shmem" })
        {
            var b = engines.GetProperty(backing);
            var candidates = b.GetProperty("candidates").EnumerateArray().ToList();
            Assert.Equal(7, candidates.Count);   // six demand-paging engines and the none baseline
            var auto = b.GetProperty("auto").GetString();
            // auto is the first supported engine, fastest first, and a missing feature is named
            var first = candidates.First(c => c.GetProperty("supported").GetBoolean());
            Assert.Equal(first.GetProperty("engine").GetString(), auto);
            Assert.False(string.IsNullOrWhiteSpace(b.GetProperty("auto_reason").GetString()));
            Assert.All(candidates, c => Assert.False(string.IsNullOrWhiteSpace(c.GetProperty("why").GetString())));
        }
        // what the probe measured decides: a host with the SIGBUS userfaultfd runs exits on anonymous memory
        var sigbus = root.GetProperty("uffd_features").EnumerateArray().Any(f => f.GetString() == "Sigbus");
        Assert.Equal(sigbus || root.GetProperty("native_userfault").GetBoolean(), engines.GetProperty("anon").GetProperty("auto").GetString() == "exits");
        // minor needs a page cache: never supported on anonymous memory
        Assert.False(engines.GetProperty("anon").GetProperty("candidates").EnumerateArray().Single(c => c.GetProperty("engine").GetString() == "minor").GetProperty("supported").GetBoolean());

        // the human report (on stderr with --json -) ends with the engines and the pick
        var lines = r.StderrLines.Select(l => l.TrimEnd()).Where(l => l.Length > 0).ToArray();
        Assert.StartsWith("--engine auto on anon memory: " + engines.GetProperty("anon").GetProperty("auto").GetString(), lines[^3]);
        Assert.StartsWith("--engine auto on shmem memory: ", lines[^2]);
        // then how async page faults are done here: never native without KVM Userfault
        var apf = root.GetProperty("async_pf");
        if (!root.GetProperty("native_userfault").GetBoolean()) Assert.False(apf.GetProperty("native").GetBoolean());
        Assert.StartsWith("async page faults: " + (apf.GetProperty("userspace").GetBoolean() ? "from userspace" : "unavailable"), lines[^1]);
    }
}
