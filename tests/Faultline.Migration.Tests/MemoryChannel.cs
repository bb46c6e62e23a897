using Faultline.Migration.Transport;

namespace Faultline.Migration.Tests;

/// <summary>An in-memory byte stream that hands out what it holds in random-sized pieces, as a socket may; 0 at the end.</summary>
internal sealed class MemoryChannel(byte[] data, Random rng, int maxPiece = 9000) : IByteChannel
{
    private int _pos;

    public TimeSpan? ReceiveTimeout { get; set; }
    public long BytesSent { get; private set; }
    public long BytesReceived => _pos;
    public string Peer => "memory";
    public List<byte[]> Sent { get; } = [];

    public void Send(ReadOnlySpan<byte> d) { Sent.Add(d.ToArray()); BytesSent += d.Length; }

    public int Receive(Span<byte> buffer)
    {
        if (_pos >= data.Length) return 0;
        var n = Math.Min(Math.Min(buffer.Length, data.Length - _pos), rng.Next(1, maxPiece));
        data.AsSpan(_pos, n).CopyTo(buffer);
        _pos += n;
        return n;
    }

    public void Shutdown() { }
    public void Dispose() { }
}
