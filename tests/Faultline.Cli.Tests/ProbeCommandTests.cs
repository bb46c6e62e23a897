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
        Assert.Equal("", r.Stderr);
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
}
