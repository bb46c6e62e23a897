namespace Faultline.Migration.Source;

/// <summary>
/// Which pages the source has put on the wire (one byte per page, claimed atomically): each page is sent exactly
/// once, by the demand server or by the push, whichever claims it first. A demand for a page the push already sent
/// is not answered again: that page is on its way on the main channel (QEMU's rule).
/// </summary>
internal sealed class SentPages(ulong pages)
{
    public const byte Unsent = 0, Pushed = 1, Demanded = 2;
    private readonly byte[] _state = new byte[pages];
    private long _sent;

    public ulong Pages { get; } = pages;
    public long SentCount => Interlocked.Read(ref _sent);
    public bool AllSent => SentCount == (long)Pages;

    public bool TryClaim(ulong index, byte how)
    {
        if (Interlocked.CompareExchange(ref _state[index], how, Unsent) != Unsent) return false;
        Interlocked.Increment(ref _sent);
        return true;
    }

    /// <summary>The first unsent page at or after <paramref name="from"/>, wrapping around; -1 when none is left.</summary>
    public long NextUnsent(ulong from)
    {
        var span = _state.AsSpan();
        if (from >= Pages) from = 0;
        var i = span[(int)from..].IndexOf(Unsent);
        if (i >= 0) return (long)from + i;
        i = span[..(int)from].IndexOf(Unsent);
        return i;
    }
}
