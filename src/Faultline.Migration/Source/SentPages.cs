namespace Faultline.Migration.Source;

/// <summary>
/// Which pages the source has put on the wire (one byte per page, claimed atomically): each page is sent exactly
/// once by the push or the demand server, whichever claims it first. A demand for a page the push has already sent
/// means that page is still in flight behind the push's backlog (the destination only asks for missing pages): it
/// is sent once more on the urgent channel (<see cref="TryClaimResend"/>), and the destination keeps the first copy.
/// </summary>
internal sealed class SentPages(ulong pages)
{
    public const byte Unsent = 0, Pushed = 1, Demanded = 2, PushedAndResent = 3;
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

    public bool IsUnsent(ulong index) => Volatile.Read(ref _state[index]) == Unsent;

    /// <summary>
    /// A destination rejoined with the bitmap of pages it has (<see cref="Protocol.RecoverMessage"/>): every page sent
    /// but not arrived (it was on the lost connection) is unsent again, so the push or a demand sends it once more.
    /// Only while nothing sends (between connections). Returns how many.
    /// </summary>
    public long Resend(ReadOnlySpan<byte> arrived)
    {
        long n = 0;
        for (ulong i = 0; i < Pages; i++)
        {
            if (_state[i] == Unsent || Protocol.RecoverMessage.Arrived(arrived, i)) continue;
            _state[i] = Unsent;
            n++;
        }
        Interlocked.Add(ref _sent, -n);
        return n;
    }

    /// <summary>A pushed page is demanded: claims its one resend on the urgent channel.</summary>
    public bool TryClaimResend(ulong index) => Interlocked.CompareExchange(ref _state[index], PushedAndResent, Pushed) == Pushed;

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
