using System.Diagnostics;
using System.Globalization;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Paging.Engines;

namespace Faultline.Paging.Bench;

/// <summary>
/// Runs the C reference (shared/reference/refpaging.c, unchanged) for the rows it covers: sequential one-qword
/// writes; modes none, missing (MISSING+COPY on anon, MINOR+CONTINUE on shmem: our "minor"), exits; CPL0 or CPL3;
/// one userfaultfd or one per vCPU; READERS readers.
/// </summary>
public sealed class ReferenceRunner(string path)
{
    public string Path { get; } = path;

    public static void CheckUsable(string path)
    {
        if (!File.Exists(path)) throw new UsageException($"--reference {path}: no such file (build it: gcc -O2 -o /tmp/refpaging shared/reference/refpaging.c -lpthread)");
    }

    /// <summary>The refpaging mode matching a row, or null if the reference doesn't cover it.</summary>
    public static string? ModeFor(PagingRunSpec spec)
    {
        if (spec.Workload != Workload.Write || spec.Order != AccessOrder.Sequential || spec.QwordsPerPage != 1) return null;
        if (spec.Options.AddressRecovery != AddressRecovery.Decode) return null;
        return (spec.Options.Mode, spec.Options.Backing) switch
        {
            (PagingMode.None, _) => "none",
            (PagingMode.Missing, Backing.Anonymous) => "missing",
            (PagingMode.Minor, Backing.Shmem) => "missing",
            (PagingMode.Exits, _) => "exits",
            _ => null,
        };
    }

    /// <summary>Runs refpaging once and returns its pages/s.</summary>
    public double Run(PagingRunSpec spec, string mode)
    {
        var mb = spec.MemPerVcpu >> 20;
        if (mb == 0 || spec.MemPerVcpu % (1UL << 20) != 0) throw new UsageException("--reference needs a whole number of MiB per vCPU");
        var args = new[]
        {
            spec.Vcpus.ToString(CultureInfo.InvariantCulture), mb.ToString(CultureInfo.InvariantCulture), mode,
            spec.Options.Readers.ToString(CultureInfo.InvariantCulture),
            "--backing", spec.Options.Backing == Backing.Shmem ? "shmem" : "anon",
            "--cpl", spec.Level == PrivilegeLevel.User ? "3" : "0",
            "--uffds", spec.Options.Uffds == UffdLayout.Single ? "single" : "per-vcpu",
        };
        var psi = new ProcessStartInfo(Path) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new FaultlineException($"cannot start {Path}");
        var stdoutTask = p.StandardOutput.ReadToEndAsync();
        var stderrTask = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            throw new FaultlineException($"{Path} did not finish within 5 minutes");
        }
        var output = stdoutTask.Result;
        if (p.ExitCode != 0) throw new FaultlineException($"{Path} {string.Join(' ', args)} failed (exit {p.ExitCode}): {stderrTask.Result.Trim()}");
        foreach (var field in output.Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries))
            if (field.StartsWith("pages_per_sec=", StringComparison.Ordinal))
                return double.Parse(field["pages_per_sec=".Length..], CultureInfo.InvariantCulture);
        throw new FaultlineException($"{Path} printed no pages_per_sec: {output.Trim()}");
    }
}
