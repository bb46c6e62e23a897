namespace Faultline.Migration.Reporting;

/// <summary>
/// One lost link rejoined in post-copy: what broke it, how long from noticing the loss until the new link carried
/// demands again (the guest's faulting vCPUs waited that long at most), the connect attempts it took, the requests in
/// flight asked for again, and the pages the source sent again (on the lost link, not arrived).
/// </summary>
public sealed record RejoinRecord(string Cause, double RecoveryMs, int Attempts, long PagesAskedAgain, long PagesSentAgain);
