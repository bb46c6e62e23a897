namespace Faultline.Cli;

/// <summary>A size given on the command line (64M): prints back the way it is typed, so help shows "[default: 64M]".</summary>
public readonly record struct ByteSize(ulong Bytes)
{
    public override string ToString() => ValueParsers.FormatSize(Bytes);
    public static implicit operator ulong(ByteSize s) => s.Bytes;
}
