using System.CommandLine;
using Faultline.Guest;
using Faultline.Kvm.Memory;

namespace Faultline.Cli;

/// <summary>
/// The one set of limits on guest RAM for every command (run, migrate, bench): at least a page, at most what the guest
/// layout maps, and whole 4 KiB pages for each vCPU. Messages name the option and the value as typed, and the limit
/// in the user's units: "--mem 1T is above the 4 GiB limit", "--mem 64M does not split into 3 vCPUs' whole 4 KiB
/// pages: use a multiple of 12K". Checked before any VM is built.
/// </summary>
internal static class GuestSizes
{
    public const ulong Min = GuestAddress.PageSize;
    public const ulong Max = GuestLayout.MaxRamBytes;

    /// <summary>A guest RAM option (the whole guest's, split between its vCPUs).</summary>
    public static Option<ByteSize> Ram(string name, string description, ulong defaultValue) =>
        CliOptions.Size(name, description, defaultValue, min: Min, max: Max);

    /// <summary>A guest RAM option without a default.</summary>
    public static Option<ByteSize?> OptionalRam(string name, string description) =>
        CliOptions.OptionalSize(name, description, min: Min, max: Max);

    /// <summary>The guest's RAM <paramref name="ram"/> (given as <paramref name="option"/>) splits into whole pages for each of <paramref name="vcpus"/>.</summary>
    public static void CheckSplit(string option, ulong ram, int vcpus)
    {
        if (vcpus < 1) return;   // the vCPU count's own check says what is wrong
        var unit = (ulong)vcpus * GuestAddress.PageSize;
        if (ram % unit == 0) return;
        var who = vcpus == 1 ? "whole 4 KiB pages" : $"{vcpus} vCPUs' whole 4 KiB pages";
        throw new UsageException($"{option} {ValueParsers.FormatSize(ram)} does not split into {who}: use a multiple of {ValueParsers.FormatSize(unit)}");
    }

    /// <summary>Each vCPU's RAM (<paramref name="option"/>) is whole pages, and all of it fits the layout for the largest count.</summary>
    public static void CheckPerVcpu(string option, ulong perVcpu, IEnumerable<int> vcpuCounts)
    {
        if (perVcpu % GuestAddress.PageSize != 0)
            throw new UsageException($"{option} {ValueParsers.FormatSize(perVcpu)} is not whole 4 KiB pages: use a multiple of 4K");
        foreach (var v in vcpuCounts)
        {
            var total = perVcpu * (ulong)v;   // both are bounded by their options (4 GiB, 256 vCPUs): no overflow
            if (total > Max)
                throw new UsageException($"{option} {ValueParsers.FormatSize(perVcpu)} × {v} vCPUs is {ValueParsers.DescribeSize(total)}, above the {ValueParsers.DescribeSize(Max)} limit");
        }
    }
}
