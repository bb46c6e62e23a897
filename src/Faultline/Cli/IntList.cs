namespace Faultline.Cli;

/// <summary>A comma list of whole numbers given on the command line (1,2,8): prints back as typed, so help shows "[default: 1,2,8]".</summary>
public sealed record IntList(int[] Values)
{
    public override string ToString() => string.Join(",", Values);
    public static implicit operator int[](IntList l) => l.Values;
}
