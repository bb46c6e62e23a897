using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Faultline.Guest;
using Faultline.Guest.Probe;
using Faultline.Kvm.Memory;
using Faultline.Paging;
using Faultline.Paging.Selection;
using Faultline.Kvm;
using Faultline.Paging.AsyncPf;
using Spectre.Console;

namespace Faultline.Cli.Commands;

/// <summary><c>faultline probe [--json]</c>: what this host's KVM and userfaultfd offer, and what they really do.</summary>
internal static class ProbeCommand
{
    public const string UserfaultCapNote =
        "KVM_CAP_USERFAULT has no stable number (239 in Houghton v1/v2, 243 in v3) and mainline gave both to other caps: these raw values prove nothing; native_userfault is measured by trying the memslot flag";

    public static Command Create()
    {
        var json = CliOptions.OutputFile("--json", "Write the findings as JSON to FILE; - (or --json alone): to stdout, the tables then to stderr");
        var command = new Command("probe", "Measure what this host's KVM and userfaultfd offer and really do, with tiny guests, and list the engines it can run") { json };
        command.SetAction(pr => Execute(pr.GetValue(json), pr.InvocationConfiguration.Output, pr.InvocationConfiguration.Error));
        return command;
    }

    private static int Execute(OutputTarget? json, TextWriter stdout, TextWriter stderr)
    {
        var report = HostProbe.Run();
        var caps = HostCapabilities.FromProbe(report);
        BackingEngines[] engines = [BackingEngines.Evaluate(caps, Backing.Anonymous), BackingEngines.Evaluate(caps, Backing.Shmem)];
        AsyncPfSupport apf;
        using (var kvm = KvmSystem.Open()) apf = AsyncPfSupport.Detect(kvm);
        json?.Write(stdout, Json(report, engines, apf));
        var console = Output.Console(Output.Human(json, stdout, stderr));
        Render(report, engines, console);
        console.MarkupLine($"[bold]async page faults[/]: {(apf.Native ? "native" : apf.Userspace ? "from userspace" : "[red]unavailable[/]")}: {Markup.Escape(apf.Why)}");
        return 0;
    }

    internal static string Json(ProbeReport r, IReadOnlyList<BackingEngines> engines, AsyncPfSupport? apf = null) => JsonOutput.Text(w =>
    {
        w.WriteStartObject();
        w.WriteNumber("kvm_api_version", r.KvmApiVersion);
        w.WriteStartObject("capabilities");
        foreach (var c in r.Capabilities) w.WriteNumber(c.Name, c.Value);
        w.WriteEndObject();
        w.WriteStartArray("uffd_features");
        foreach (var f in r.UffdFeatureNames) w.WriteStringValue(f);
        w.WriteEndArray();
        w.WriteHex("uffd_features_mask", (ulong)r.UffdFeatures);
        w.WriteBoolean("native_userfault", r.NativeUserfault);
        w.WriteBoolean("cpl0_emulated", r.Cpl0Emulated);
        w.WriteStartObject("fault_exit");
        w.WriteString("cpl0", r.Cpl0Fault.Word);
        w.WriteString("cpl3", r.Cpl3Fault.Word);
        w.WriteEndObject();

        w.WriteStartObject("instruction_rate");
        WriteRate(w, "cpl0", r.Cpl0Rate);
        WriteRate(w, "cpl3", r.Cpl3Rate);
        w.WriteRounded("cpl3_over_cpl0", r.Cpl3OverCpl0, 1);
        w.WriteNumber("emulated_above_ratio", ProbeReport.EmulationRatio);
        w.WriteEndObject();

        w.WriteStartObject("fault_exit_detail");
        WriteFault(w, "cpl0", r.Cpl0Fault);
        WriteFault(w, "cpl3", r.Cpl3Fault);
        w.WriteEndObject();

        w.WriteStartArray("capability_details");
        foreach (var c in r.Capabilities)
        {
            w.WriteStartObject();
            w.WriteString("name", c.Name);
            w.WriteString("kernel_name", c.KernelName);
            w.WriteNumber("number", c.Number);
            w.WriteNumber("value", c.Value);
            w.WriteEndObject();
        }
        w.WriteEndArray();

        w.WriteStartObject("userfault_cap_candidates");
        foreach (var c in r.UserfaultCapCandidates) w.WriteNumber(c.Number.ToString(CultureInfo.InvariantCulture), c.Value);
        w.WriteEndObject();
        w.WriteString("userfault_cap_candidates_note", UserfaultCapNote);
        if (r.UnnamedUffdFeatureBits != 0) w.WriteHex("uffd_features_unnamed_bits", r.UnnamedUffdFeatureBits);

        w.WriteStartObject("host");
        w.WriteString("kernel", r.Host.KernelRelease);
        w.WriteString("arch", r.Host.Architecture);
        w.WriteNumber("cpus", r.Host.LogicalCpus);
        w.WriteStartArray("kvm_modules");
        foreach (var m in r.Host.KvmModules) w.WriteStringValue(m);
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteRounded("probe_seconds", r.Elapsed.TotalSeconds);
        w.WriteStartObject("engines");
        foreach (var b in engines) WriteEngines(w, b);
        w.WriteEndObject();
        if (apf is not null)
        {
            w.WriteStartObject("async_pf");
            w.WriteBoolean("native", apf.Native);
            w.WriteBoolean("userspace", apf.Userspace);
            w.WriteString("why", apf.Why);
            w.WriteEndObject();
        }
        w.WriteEndObject();
    });

    private static void WriteEngines(Utf8JsonWriter w, BackingEngines b)
    {
        w.WriteStartObject(b.BackingName);
        if (b.Chosen is { } c) w.WriteString("auto", c.Name()); else w.WriteNull("auto");
        w.WriteString("auto_reason", b.Reason);
        w.WriteStartArray("candidates");
        foreach (var e in b.Candidates)
        {
            w.WriteStartObject();
            w.WriteString("engine", e.Mode.Name());
            w.WriteBoolean("supported", e.Supported);
            w.WriteString("why", e.Why);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WriteRate(Utf8JsonWriter w, string name, SpinRate rate)
    {
        w.WriteStartObject(name);
        w.WriteNumber("iterations", rate.Iterations);
        w.WriteRounded("seconds", rate.Elapsed.TotalSeconds, 4);
        w.WriteRounded("per_second", rate.PerSecond, 0);
        w.WriteEndObject();
    }

    private static void WriteFault(Utf8JsonWriter w, string name, FaultExitObservation f)
    {
        w.WriteStartObject(name);
        w.WriteString("kind", f.Word);
        w.WriteBoolean("address_reported", f.AddressReported);
        if (f.Address is { } a) w.WriteHex("address", a); else w.WriteNull("address");
        w.WriteHex("touched_address", f.ExpectedAddress);
        w.WriteBoolean("address_matches", f.AddressMatches);
        if (f.IsWrite is { } write) w.WriteString("access", write ? "write" : "read"); else w.WriteNull("access");
        w.WriteNumber("exit_reason", f.RawExitReason);
        w.WriteString("detail", f.Detail);
        w.WriteEndObject();
    }

    internal static void Render(ProbeReport r, IReadOnlyList<BackingEngines> engines, IAnsiConsole console)
    {
        var h = r.Host;
        console.MarkupLine($"[bold]Faultline probe[/]: Linux {Markup.Escape(h.KernelRelease)} {Markup.Escape(h.Architecture)}, {h.LogicalCpus} CPUs, " +
                           $"modules {Markup.Escape(string.Join(" ", h.KvmModules))}, KVM API {r.KvmApiVersion}, {r.Elapsed.TotalSeconds:0.00} s");

        var behaviour = new Table().Title("Measured with tiny guests").AddColumns("What", "CPL0 (kernel)", "CPL3 (user)", "Meaning");
        behaviour.AddRow("Spin rate (inc rbx; jmp)", $"{Output.Count(r.Cpl0Rate.PerSecond)}/s", $"{Output.Count(r.Cpl3Rate.PerSecond)}/s",
            r.Cpl0Emulated
                ? $"CPL0 code is [yellow]emulated[/] (CPL3 {r.Cpl3OverCpl0:0}x faster): run workloads at CPL3"
                : $"CPL0 runs natively (CPL3/CPL0 = {r.Cpl3OverCpl0:0.0})");
        behaviour.AddRow("Missing page, SIGBUS userfaultfd", FaultCell(r.Cpl0Fault), FaultCell(r.Cpl3Fault), Markup.Escape(FaultMeaning(r)));
        console.Write(behaviour);

        var caps = new Table().Title("KVM capabilities (KVM_CHECK_EXTENSION on /dev/kvm)").AddColumns("Capability", "Number", "Value");
        foreach (var c in r.Capabilities)
            caps.AddRow(Markup.Escape(c.KernelName), c.Number.ToString(CultureInfo.InvariantCulture), c.Value == 0 ? "[grey]0[/]" : CapValue(c));
        foreach (var c in r.UserfaultCapCandidates)
            caps.AddRow($"[grey]KVM_CAP_USERFAULT candidate (unreliable)[/]", c.Number.ToString(CultureInfo.InvariantCulture), c.Value.ToString(CultureInfo.InvariantCulture));
        caps.AddRow("[bold]Native KVM Userfault[/] (KVM_MEM_USERFAULT accepted)", "", r.NativeUserfault ? "[green]yes[/]" : "no");
        console.Write(caps);

        console.MarkupLine($"[bold]userfaultfd features[/] (0x{(ulong)r.UffdFeatures:x}): {Markup.Escape(string.Join(", ", r.UffdFeatureNames))}");

        // last: what the user came for — which engines run here, and which one --engine auto takes
        var t = new Table().Title("Paging engines on this host (fastest first, as bench paging measured)").AddColumn("Engine");
        foreach (var b in engines) t.AddColumn(b.BackingName);
        foreach (var mode in engines.SelectMany(b => b.Candidates).Select(c => c.Mode).Distinct())
            t.AddRow([Markup.Escape(mode.Name()), .. engines.Select(b => b.Candidates.FirstOrDefault(c => c.Mode == mode) is { } c ? EngineCell(c) : "")]);
        console.Write(t);
        foreach (var b in engines)
            console.MarkupLine(b.Chosen is { } c
                ? $"[bold]--engine auto[/] on {b.BackingName} memory: [bold]{Markup.Escape(c.Name())}[/]: {Markup.Escape(b.Reason)}"
                : $"[bold]--engine auto[/] on {b.BackingName} memory: [red]none[/]: {Markup.Escape(b.Reason)}");
    }

    private static string EngineCell(EngineCandidate e) =>
        e.Supported ? $"[green]yes[/]: {Markup.Escape(e.Why)}" : $"[grey]no: {Markup.Escape(e.Why)}[/]";

    private static string CapValue(CapabilityValue c) =>
        c.Value > 9 ? $"{c.Value.ToString(CultureInfo.InvariantCulture)} (0x{c.Value:x})" : c.Value.ToString(CultureInfo.InvariantCulture);

    private static string FaultCell(FaultExitObservation f)
    {
        var where = f.AddressReported ? $" at 0x{f.Address:x}{(f.AddressMatches ? "" : " [red](not the touched page)[/]")}" : " [grey](no address)[/]";
        return f.Kind == FaultExitKind.None ? "none" : $"[bold]{f.Word}[/]{where}";
    }

    private static string FaultMeaning(ProbeReport r)
    {
        var levels = new[] { r.Cpl0Fault, r.Cpl3Fault };
        var parts = new List<string>();
        foreach (var f in levels)
        {
            var level = f.Level == PrivilegeLevel.Kernel ? "CPL0" : "CPL3";
            parts.Add(f.Kind switch
            {
                FaultExitKind.MemoryFault => $"{level}: KVM_EXIT_MEMORY_FAULT with the GPA",
                FaultExitKind.Mmio => $"{level}: the emulator's MMIO exit, the VMM completes the access",
                FaultExitKind.Efault => $"{level}: -EFAULT without a GPA, RIP at the faulting instruction",
                _ => $"{level}: no exit reached the VMM",
            });
        }
        return string.Join("; ", parts);
    }
}
