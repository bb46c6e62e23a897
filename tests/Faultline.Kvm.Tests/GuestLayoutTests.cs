using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Kvm.Tests;

/// <summary>
/// The guest layout's edges: the largest guest (4 GiB) fits the identity map below the doorbell, runs at both ends of
/// its RAM and calls through the doorbell above it; a byte more is refused.
/// </summary>
public sealed class GuestLayoutTests
{
    [Fact]
    public void The_largest_guest_ends_below_the_doorbell_the_maps_last_page()
    {
        Assert.Equal(4 * GiB, GuestLayout.MaxRamBytes);
        Assert.True(GuestLayout.PageDirectories + (ulong)GuestLayout.MappedGiB * 0x1000 <= GuestLayout.Gdt, "the page directories run into the GDT");
        Assert.True(GuestLayout.RamBase + GuestLayout.MaxRamBytes <= GuestLayout.Doorbell, "RAM reaches the doorbell");
        Assert.Equal((ulong)GuestLayout.MappedGiB * GiB, GuestLayout.Doorbell + GuestAddress.PageSize);
        new MachineConfig(2, GuestLayout.MaxRamBytes).Validate();
        var e = Assert.Throws<UsageException>(() => new MachineConfig(1, GuestLayout.MaxRamBytes + GuestAddress.PageSize).Validate());
        Assert.Equal("guest memory 4294971392 bytes is more than this guest layout maps (4096 MiB)", e.Message);
        e = Assert.Throws<UsageException>(() => new MachineConfig(2, 8 * GiB).Validate());
        Assert.Equal("guest memory 8192 MiB is more than this guest layout maps (4096 MiB)", e.Message);
    }

    [KvmTheory]
    [InlineData(PrivilegeLevel.User)]
    [InlineData(PrivilegeLevel.Kernel)]
    public void A_4_GiB_guest_writes_both_ends_of_its_ram_and_reports_through_the_doorbell(PrivilegeLevel level)
    {
        // the 4 GiB are mapped, not touched: only the four pages written are allocated
        using var m = GuestMachine.Create(new MachineConfig(2, GuestLayout.MaxRamBytes));
        const ulong seed = 0x4_0000_5eed, twoPages = 2 * GuestAddress.PageSize;
        var first = m.RangeOf(0).Start.Value;
        var end = m.RangeOf(1).End.Value;
        Assert.Equal(GuestLayout.RamBase + 4 * GiB, end);
        var run = m.Run(Workload.Write, i => i == 0 ? new WorkloadArgs(first, first + twoPages, seed) : new WorkloadArgs(end - twoPages, end, seed), level)
            .ThrowIfFailed();
        Assert.All(run.Vcpus, v => Assert.Equal(2UL, v.Result));   // done(pages), a doorbell store above 4 GiB
        foreach (var gpa in new[] { first, first + 4096, end - twoPages, end - 4096 })
            Assert.Equal(gpa + seed, m.Ram.Qword(new GuestAddress(gpa)));

        // the page tables: five page directories of 2 MiB user pages, nothing above
        const ulong present = 1, user = 4, large = 0x80;
        for (var g = 0UL; g < 6; g++)
        {
            var pdpte = m.System.Qword(new GuestAddress(GuestLayout.Pdpt + g * 8));
            Assert.Equal(g < (ulong)GuestLayout.MappedGiB, (pdpte & present) != 0);
        }
        var lastPd = GuestLayout.PageDirectories + (ulong)(GuestLayout.MappedGiB - 1) * 0x1000;
        var doorbellPde = m.System.Qword(new GuestAddress(lastPd + 511 * 8));
        const ulong writable = 2, accessedDirty = 0x60;   // the CPU sets A and D as the guest uses the page
        Assert.Equal((GuestLayout.Doorbell & ~0x1FFFFFUL) | present | writable | user | large, doorbellPde & ~accessedDirty);
    }
}
