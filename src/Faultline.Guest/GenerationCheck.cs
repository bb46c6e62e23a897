using Faultline.Kvm.Interop;

namespace Faultline.Guest;

/// <summary>
/// Says when a generation program resumed from its registers (after a migration, say) has verified everything:
/// paused in pass k, the rest of pass k checks what it has not yet rewritten, and pass k+1 checks every page it visits
/// against generation k. So the check is complete at the first report of a pass ≥ k+1 after the resume; the mismatches
/// found since the resume are that report's cumulative count less the one in the paused registers (R9). A pause just
/// after a pass's report (RBP already k+1) costs one extra pass, never a missed one. Sequential and random passes visit
/// every page, so every page is checked exactly; hotset checks the pages it touches, with the relaxed rule.
/// </summary>
public sealed class GenerationCheck
{
    /// <summary>The pass the vCPU was in when paused (RBP).</summary>
    public ulong PausedPass { get; }
    /// <summary>The cumulative mismatches when paused (R9): found before the resume.</summary>
    public ulong MismatchesBefore { get; }
    /// <summary>The last report seen since the resume, if any.</summary>
    public GenerationReport? Last { get; private set; }
    /// <summary>True once a report of pass ≥ <see cref="PausedPass"/> + 1 has arrived.</summary>
    public bool IsComplete { get; private set; }

    public GenerationCheck(in KvmRegs paused)
    {
        PausedPass = GenerationProgram.PassOf(paused);
        MismatchesBefore = GenerationProgram.MismatchesOf(paused);
    }

    /// <summary>Mismatching qwords found since the resume (as of the last report).</summary>
    public ulong Mismatches => Last is { } r ? r.Mismatches - Math.Min(r.Mismatches, MismatchesBefore) : 0;

    /// <summary>Takes one report(value) of the resumed vCPU; true when the check is complete.</summary>
    public bool Observe(ulong reportValue)
    {
        var r = GenerationReport.Decode(reportValue);
        if (r.Mismatches < MismatchesBefore)
            throw new GuestException($"generation report of pass {r.Pass} counts {r.Mismatches} mismatches, fewer than the {MismatchesBefore} before the pause");
        Last = r;
        if (r.Pass >= PausedPass + 1) IsComplete = true;
        return IsComplete;
    }
}
