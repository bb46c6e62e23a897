using Faultline.Guest;
using Faultline.Kvm.Interop;
using Faultline.Kvm.Memory;
using Faultline.TestKit;
using static Faultline.TestKit.Units;

namespace Faultline.Kvm.Tests;

/// <summary>
/// Vcpu.Run's decoding of each exit kind, driven by hand on the test thread: the guest's exit tour at CPL0 (port I/O and
/// hlt #GP at CPL3 on this host), and the doorbell store that every guest call is.
/// </summary>
public sealed class ExitDecodingTests
{
    private const ulong UnbackedMmio = 0xFFFF0000;   // identity-mapped, below the doorbell page, outside every memslot

    [KvmTheory]
    [InlineData(64 * KiB, UnbackedMmio)]
    [InlineData(GuestLayout.MaxRamBytes, GuestLayout.RamBase + GuestLayout.MaxRamBytes)]   // the largest guest: RAM's end, in the gap below the doorbell
    public void Exit_tour_at_cpl0_decodes_io_out_io_in_mmio_read_hlt_and_done(ulong ramBytes, ulong unbacked)
    {
        using var m = GuestMachine.Create(new MachineConfig(1, ramBytes));
        var vcpu = m.Vcpus[0];
        const ulong seed = 0x1234_5678_9ABC_DEF1;           // OUT sends AL, the low byte: 0xF1
        const byte inValue = 0x5A;
        const ulong mmioValue = 0x1122_3344_5566_7788;
        m.Image.Boot(vcpu, Workload.ExitTour, new WorkloadArgs(0, unbacked, seed), PrivilegeLevel.Kernel);
        vcpu.BindToCurrentThread();
        try
        {
            // out 0x10, al
            var exit = vcpu.Run();
            Assert.Equal(VcpuExitKind.IoOut, exit.Kind);
            Assert.Equal(KvmConst.KVM_EXIT_IO, exit.RawReason);
            Assert.Equal((ushort)0x10, exit.Port);
            Assert.Equal(1u, exit.Size);
            Assert.Equal(1u, exit.Count);
            Assert.True(exit.IsWrite);
            Assert.Equal(seed & 0xFF, exit.Data);
            Assert.False(GuestCall.TryDecode(exit, out _));
            Assert.Equal(seed, vcpu.CurrentRegs().Rdx);      // synced registers arrive with the exit

            // in al, 0x11: the VMM answers, the guest reports what it got
            exit = vcpu.Run();
            Assert.Equal(VcpuExitKind.IoIn, exit.Kind);
            Assert.Equal(KvmConst.KVM_EXIT_IO, exit.RawReason);
            Assert.Equal((ushort)0x11, exit.Port);
            Assert.Equal(1u, exit.Size);
            Assert.False(exit.IsWrite);
            vcpu.CompleteIoIn(inValue);
            exit = vcpu.Run();
            Assert.True(GuestCall.TryDecode(exit, out var call), exit.ToString());
            Assert.Equal(new GuestCall(GuestOp.Report, inValue), call);

            // mov rax, [rsi]: an 8-byte read outside every memslot is plain MMIO, answered by the VMM
            exit = vcpu.Run();
            Assert.Equal(VcpuExitKind.Mmio, exit.Kind);
            Assert.Equal(KvmConst.KVM_EXIT_MMIO, exit.RawReason);
            Assert.Equal(MemoryFaultForm.None, exit.Form);
            Assert.True(exit.HasAddress);
            Assert.Equal(new GuestAddress(unbacked), exit.Address);
            Assert.Equal(8u, exit.Size);
            Assert.False(exit.IsWrite);
            Assert.False(GuestCall.TryDecode(exit, out _));
            vcpu.CompleteMmioRead(mmioValue);
            exit = vcpu.Run();
            Assert.True(GuestCall.TryDecode(exit, out call), exit.ToString());
            Assert.Equal(new GuestCall(GuestOp.Report, mmioValue), call);

            // hlt (no in-kernel irqchip: an exit to the VMM), then the guest continues to done(0)
            exit = vcpu.Run();
            Assert.Equal(VcpuExitKind.Hlt, exit.Kind);
            Assert.Equal(KvmConst.KVM_EXIT_HLT, exit.RawReason);
            exit = vcpu.Run();
            Assert.True(GuestCall.TryDecode(exit, out call), exit.ToString());
            Assert.Equal(new GuestCall(GuestOp.Done, 0), call);
        }
        finally
        {
            vcpu.UnbindThread();
        }
    }

    [KvmTheory]
    [InlineData(PrivilegeLevel.User)]
    [InlineData(PrivilegeLevel.Kernel)]
    public void A_doorbell_store_is_an_mmio_write_exit_that_decodes_as_a_guest_call(PrivilegeLevel level)
    {
        using var m = GuestMachine.Create(new MachineConfig(1, 64 * KiB));
        var vcpu = m.Vcpus[0];
        var page = m.Ram.Base + 3 * GuestAddress.PageSize;
        const ulong before = 0xFEED_FACE_CAFE_BEEF, seed = 0x77;
        m.Ram.Qword(page) = before;
        // TouchOnce: rax = [rdi]; report(rax); [rdi] = rdi + seed; done(rax)
        m.Image.Boot(vcpu, Workload.TouchOnce, new WorkloadArgs(page.Value, page.Value + GuestAddress.PageSize, seed), level);
        vcpu.BindToCurrentThread();
        try
        {
            var exit = vcpu.Run();
            Assert.Equal(VcpuExitKind.Mmio, exit.Kind);
            Assert.Equal(KvmConst.KVM_EXIT_MMIO, exit.RawReason);
            Assert.True(exit.IsWrite);
            Assert.True(exit.HasAddress);
            Assert.Equal(new GuestAddress(GuestLayout.Doorbell + 8 * (ulong)GuestOp.Report), exit.Address);
            Assert.Equal(8u, exit.Size);
            Assert.Equal(before, exit.Data);
            Assert.True(GuestCall.TryDecode(exit, out var call));
            Assert.Equal(new GuestCall(GuestOp.Report, before), call);

            exit = vcpu.Run();
            Assert.Equal(new GuestAddress(GuestLayout.Doorbell + 8 * (ulong)GuestOp.Done), exit.Address);
            Assert.True(GuestCall.TryDecode(exit, out call));
            Assert.Equal(new GuestCall(GuestOp.Done, before), call);
            Assert.Equal(page.Value + seed, m.Ram.Qword(page));
        }
        finally
        {
            vcpu.UnbindThread();
        }
    }

    [Fact]
    public void Only_doorbell_page_writes_decode_as_guest_calls()
    {
        static VcpuExit Mmio(ulong gpa, bool write, ulong data = 0) =>
            new() { Kind = VcpuExitKind.Mmio, RawReason = KvmConst.KVM_EXIT_MMIO, Address = new GuestAddress(gpa), HasAddress = true, Size = 8, IsWrite = write, Data = data };

        Assert.True(GuestCall.TryDecode(Mmio(GuestLayout.Doorbell + 8 * (ulong)GuestOp.Fail, true, 42), out var call));
        Assert.Equal(new GuestCall(GuestOp.Fail, 42), call);
        Assert.True(GuestCall.TryDecode(Mmio(GuestLayout.Doorbell + 8 * (ulong)GuestOp.Exception, true, 14), out call));
        Assert.Equal(new GuestCall(GuestOp.Exception, 14), call);
        Assert.False(GuestCall.TryDecode(Mmio(GuestLayout.Doorbell, false), out _));                 // a read of the doorbell
        Assert.False(GuestCall.TryDecode(Mmio(GuestLayout.Doorbell - 8, true), out _));              // the page below
        Assert.False(GuestCall.TryDecode(Mmio(UnbackedMmio, true), out _));
        var io = new VcpuExit { Kind = VcpuExitKind.IoOut, Port = 0x10, Size = 1, IsWrite = true };
        Assert.False(GuestCall.TryDecode(io, out _));
        var fault = new VcpuExit { Kind = VcpuExitKind.MemoryFault, Form = MemoryFaultForm.EmulatedMmio, Address = new GuestAddress(GuestLayout.Doorbell), HasAddress = true, IsWrite = true };
        Assert.False(GuestCall.TryDecode(fault, out _));
    }
}
