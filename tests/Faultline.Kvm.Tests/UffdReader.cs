using System.Buffers.Binary;
using Faultline.Guest;
using Faultline.Kvm.Memory;
using Faultline.Kvm.Uffd;

namespace Faultline.Kvm.Tests;

/// <summary>
/// A test's userfaultfd reader: one dedicated named thread that polls the uffd next to a <see cref="StopEvent"/>, reads
/// every fault message and hands it to <c>resolve</c> (the selftests' reader, minus epoll). Records each fault and the
/// outcome of its resolution; an exception in the loop is kept and rethrown by <see cref="ThrowIfFailed"/>.
/// Dispose stops and joins the thread; it does not own the uffd.
/// </summary>
internal sealed class UffdReader : IDisposable
{
    private readonly Userfaultfd _uffd;
    private readonly Func<UffdFault, ResolveOutcome> _resolve;
    private readonly StopEvent _stop = new();
    private readonly Thread _thread;
    private readonly List<(UffdFault Fault, ResolveOutcome Outcome)> _log = [];
    private Exception? _error;
    private int _inFlight;
    private int _disposed;

    public UffdReader(Userfaultfd uffd, Func<UffdFault, ResolveOutcome> resolve, string name = "fl-uffd0")
    {
        _uffd = uffd;
        _resolve = resolve;
        _thread = new Thread(Loop) { Name = name, IsBackground = true };
        _thread.Start();
    }

    /// <summary>
    /// Every fault read so far, with what resolving it returned. Waits for a resolution in flight to be logged: the
    /// vCPU it woke may finish (and the test read this) before the reader thread gets to record it.
    /// </summary>
    public IReadOnlyList<(UffdFault Fault, ResolveOutcome Outcome)> Log
    {
        get
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _inFlight) != 0) spin.SpinOnce();
            lock (_log) return [.. _log];
        }
    }

    public Exception? Error => Volatile.Read(ref _error);

    public void ThrowIfFailed()
    {
        if (Error is { } e) throw new InvalidOperationException($"uffd reader failed: {e.Message}", e);
    }

    private void Loop()
    {
        try
        {
            while (_uffd.WaitReadable(_stop))
            {
                while (true)
                {
                    Interlocked.Increment(ref _inFlight);    // before the read: a fault that is read counts until it is logged
                    try
                    {
                        if (!_uffd.TryReadFault(out var fault)) break;
                        var outcome = _resolve(fault);
                        lock (_log) _log.Add((fault, outcome));
                    }
                    finally
                    {
                        Interlocked.Decrement(ref _inFlight);
                    }
                }
            }
        }
        catch (Exception e)
        {
            Volatile.Write(ref _error, e);
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop.Set();
        _thread.Join();
        _stop.Dispose();
    }
}

/// <summary>The test pattern: the qword at GPA a holds a + seed (the workloads' pattern).</summary>
internal static class Pattern
{
    public static void Fill(Span<byte> page, GuestAddress gpa, ulong seed)
    {
        for (var i = 0; i < page.Length; i += 8) BinaryPrimitives.WriteUInt64LittleEndian(page[i..], gpa.Value + (ulong)i + seed);
    }

    public static byte[] Page(GuestAddress gpa, ulong seed)
    {
        var page = new byte[GuestAddress.PageSize];
        Fill(page, gpa, seed);
        return page;
    }

    /// <summary>The GPA of a host address inside the machine's guest RAM (the fault message carries the host address).</summary>
    public static GuestAddress GpaOf(GuestMachine m, ulong hostAddress) => new(GuestLayout.RamBase + (hostAddress - m.Ram.Host.Value));

    /// <summary>Page index of a guest address inside guest RAM.</summary>
    public static int PageIndex(GuestMachine m, GuestAddress gpa) => (int)((gpa.Value - m.Ram.Base.Value) >> GuestAddress.PageShift);

    /// <summary>Counts qwords of guest RAM that do not hold the pattern, read through the host mapping (pages must be present).</summary>
    public static long HostMismatches(GuestMachine m, ulong seed)
    {
        long wrong = 0;
        for (var gpa = m.Ram.Base.Value; gpa < m.Ram.End.Value; gpa += 8)
            if (m.Ram.Qword(new GuestAddress(gpa)) != gpa + seed) wrong++;
        return wrong;
    }
}
