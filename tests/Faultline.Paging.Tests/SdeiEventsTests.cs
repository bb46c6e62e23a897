using Faultline.Paging.AsyncPf.Arm;
using static Faultline.Kvm.ArmPvAsyncPf;

namespace Faultline.Paging.Tests;

/// <summary>The SDEI state machine call by call: states (registered, enabled, running, unregister-pending), the PE mask, and every error return.</summary>
public sealed class SdeiEventsTests
{
    private const uint Apf = DefaultAsyncPfEvent;
    private static SdeiEvents Fresh() => new([Apf]);

    private static SdeiEvents Ready(uint e = Apf)
    {
        var s = Fresh();
        Assert.Equal(SdeiSuccess, s.Register(e, 0x1000, 0x2000, 0));
        Assert.Equal(SdeiSuccess, s.Enable(e));
        Assert.Equal(SdeiSuccess, s.Unmask());
        return s;
    }

    [Fact]
    public void A_pe_exposes_the_software_event_and_its_own_and_starts_masked()
    {
        var s = Fresh();
        Assert.Equal(2, s.Count);
        Assert.Equal(0, s.SlotOf(SoftwareSignaledEvent));
        Assert.Equal(1, s.SlotOf(Apf));
        Assert.True(s.Masked);
        Assert.Equal(0, s.Status(Apf));
    }

    [Fact]
    public void Register_then_register_again_is_denied_and_bad_flags_or_events_are_invalid()
    {
        var s = Fresh();
        Assert.Equal(SdeiSuccess, s.Register(Apf, 0x1000, 0x2000, 1));
        Assert.Equal((long)StatusRegistered, s.Status(Apf));
        Assert.Equal((0x1000UL, 0x2000UL), (s.EntryOf(1), s.ArgOf(1)));
        Assert.Equal(SdeiDenied, s.Register(Apf, 0x3000, 0, 0));
        Assert.Equal(SdeiInvalidParameters, s.Register(0x1234, 0x1000, 0, 0));
        Assert.Equal(SdeiInvalidParameters, s.Register(SoftwareSignaledEvent, 0x1000, 0, 2));
    }

    [Fact]
    public void Enable_and_disable_need_a_registered_event()
    {
        var s = Fresh();
        Assert.Equal(SdeiDenied, s.Enable(Apf));
        Assert.Equal(SdeiDenied, s.Disable(Apf));
        Assert.Equal(SdeiInvalidParameters, s.Enable(0x1234));
        Assert.Equal(SdeiInvalidParameters, s.Disable(0x1234));
        s.Register(Apf, 0x1000, 0, 0);
        Assert.Equal(SdeiSuccess, s.Enable(Apf));
        Assert.Equal((long)(StatusRegistered | StatusEnabled), s.Status(Apf));
        Assert.Equal(SdeiSuccess, s.Disable(Apf));
        Assert.Equal((long)StatusRegistered, s.Status(Apf));
    }

    [Fact]
    public void An_event_signalled_while_masked_stays_pending_and_is_dispatched_on_unmask()
    {
        var s = Fresh();
        s.Register(Apf, 0x1000, 0, 0);
        s.Enable(Apf);
        Assert.Equal(SdeiSuccess, s.Signal(Apf));
        Assert.Equal(-1, s.TakeDispatchable());
        Assert.True(s.IsPending(1));
        Assert.Equal(SdeiSuccess, s.Unmask());
        Assert.Equal(1, s.TakeDispatchable());
        Assert.Equal((long)(StatusRegistered | StatusEnabled | StatusRunning), s.Status(Apf));
        Assert.False(s.IsPending(1));
    }

    [Fact]
    public void A_disabled_event_waits_pending_until_enabled_and_an_unregistered_one_cannot_be_signalled()
    {
        var s = Fresh();
        Assert.Equal(SdeiDenied, s.Signal(Apf));
        Assert.Equal(SdeiInvalidParameters, s.Signal(0x1234));
        s.Register(Apf, 0x1000, 0, 0);
        s.Unmask();
        s.Signal(Apf);
        Assert.Equal(-1, s.TakeDispatchable());
        s.Enable(Apf);
        Assert.Equal(1, s.TakeDispatchable());
    }

    [Fact]
    public void Masking_again_holds_events_back()
    {
        var s = Ready();
        Assert.Equal(SdeiSuccess, s.Mask());
        Assert.False(s.CanDispatch(1));
        s.Signal(Apf);
        Assert.Equal(-1, s.TakeDispatchable());
        s.Unmask();
        Assert.True(s.CanDispatch(1));
        Assert.Equal(1, s.TakeDispatchable());
    }

    [Fact]
    public void No_second_event_while_a_handler_runs_and_complete_without_one_is_denied()
    {
        var s = Ready();
        s.Register(SoftwareSignaledEvent, 0x1000, 0, 0);
        s.Enable(SoftwareSignaledEvent);
        Assert.Equal(SdeiDenied, s.Complete(out var none));
        Assert.Equal(-1, none);
        s.Signal(Apf);
        Assert.Equal(1, s.TakeDispatchable());
        s.Signal(SoftwareSignaledEvent);
        Assert.False(s.CanDispatch(0));
        Assert.Equal(-1, s.TakeDispatchable());
        Assert.Equal(SdeiSuccess, s.Complete(out var done));
        Assert.Equal(1, done);
        Assert.Equal(0, s.TakeDispatchable());        // the held one, after COMPLETE
    }

    [Fact]
    public void Unregister_while_running_is_pending_then_done_on_complete()
    {
        var s = Ready();
        s.Signal(Apf);
        s.TakeDispatchable();
        Assert.Equal(SdeiPending, s.Unregister(Apf));
        Assert.True(s.IsUnregisterPending(1));
        Assert.Equal(SdeiDenied, s.Unregister(Apf));  // already on its way out
        Assert.Equal(SdeiDenied, s.Enable(Apf));
        Assert.Equal(SdeiDenied, s.Register(Apf, 0x1000, 0, 0));
        s.Complete(out _);
        Assert.Equal(0, s.Status(Apf));
        Assert.Equal(SdeiSuccess, s.Register(Apf, 0x1000, 0, 0));
    }

    [Fact]
    public void Unregister_when_idle_is_immediate_and_errors_are_returned()
    {
        var s = Ready();
        Assert.Equal(SdeiSuccess, s.Unregister(Apf));
        Assert.Equal(0, s.Status(Apf));
        Assert.Equal(SdeiDenied, s.Unregister(Apf));
        Assert.Equal(SdeiInvalidParameters, s.Unregister(0x1234));
        Assert.Equal(SdeiInvalidParameters, s.Status(0x1234));
    }

    [Fact]
    public void Get_info_describes_private_normal_priority_events()
    {
        var s = Fresh();
        Assert.Equal(0, s.GetInfo(Apf, InfoType));
        Assert.Equal(0, s.GetInfo(Apf, InfoPriority));
        Assert.Equal(0, s.GetInfo(Apf, InfoSignaled));
        Assert.Equal(1, s.GetInfo(SoftwareSignaledEvent, InfoSignaled));
        Assert.Equal(SdeiInvalidParameters, s.GetInfo(Apf, InfoRoutingMode));
        Assert.Equal(SdeiInvalidParameters, s.GetInfo(Apf, InfoRoutingAffinity));
        Assert.Equal(SdeiInvalidParameters, s.GetInfo(Apf, 9));
        Assert.Equal(SdeiInvalidParameters, s.GetInfo(0x1234, InfoType));
    }

    [Fact]
    public void Private_reset_unregisters_everything_and_a_running_event_at_its_complete()
    {
        var s = Ready();
        s.Register(SoftwareSignaledEvent, 0x1000, 0, 0);
        s.Signal(Apf);
        s.TakeDispatchable();
        Assert.Equal(SdeiSuccess, s.PrivateReset());
        Assert.Equal(0, s.Status(SoftwareSignaledEvent));
        Assert.True(s.IsUnregisterPending(1));
        s.Complete(out _);
        Assert.Equal(0, s.Status(Apf));
        Assert.False(s.Masked);
        Assert.Equal(SdeiSuccess, SdeiEvents.SharedReset());
    }

    [Fact]
    public void Capture_and_restore_carry_registrations_enables_pending_and_the_mask()
    {
        var s = Ready();
        s.Mask();
        s.Signal(Apf);
        var state = s.Capture();
        var t = Fresh();
        t.Restore(state);
        Assert.Equal(s.Status(Apf), t.Status(Apf));
        Assert.True(t.Masked);
        Assert.True(t.IsPending(1));
        Assert.Equal((0x1000UL, 0x2000UL), (t.EntryOf(1), t.ArgOf(1)));
        t.Unmask();
        Assert.Equal(1, t.TakeDispatchable());
        Assert.Throws<InvalidOperationException>(() => t.Restore(state));   // a handler runs now
    }

    [Fact]
    public void The_function_ids_follow_the_smccc_layout()
    {
        Assert.Equal(AsyncPfFunctionId, FunctionId(smc64: false, OwnerVendorHyp, 2));
        Assert.Equal(SdeiVersion, FunctionId(smc64: true, OwnerStandard, 0x20));
        Assert.Equal(SdeiSharedReset, FunctionId(smc64: true, OwnerStandard, 0x32));
    }
}
