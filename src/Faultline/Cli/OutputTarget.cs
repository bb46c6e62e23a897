namespace Faultline.Cli;

/// <summary>
/// Where an output option (<c>--json</c>, <c>--svg</c>) writes: a file whose directory was checked to be writable when
/// the command line was parsed, or stdout (<c>-</c>, or <c>--json</c> given alone). Prints the way it is typed.
/// </summary>
public sealed record OutputTarget(string? Path)
{
    public static readonly OutputTarget Stdout = new((string?)null);

    public bool IsStdout => Path is null;

    public override string ToString() => Path ?? "-";

    /// <summary>Writes <paramref name="text"/> and a newline to the file, or to <paramref name="stdout"/>.</summary>
    public void Write(TextWriter stdout, string text)
    {
        if (Path is null)
        {
            stdout.WriteLine(text);
            stdout.Flush();
            return;
        }
        try { File.WriteAllText(Path, text + Environment.NewLine); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FaultlineException($"cannot write {Path}: {OutputPaths.Reason(e)}");
        }
    }

    /// <summary>Writes what <paramref name="write"/> puts into a stream to the file, or as UTF-8 text to <paramref name="stdout"/>.</summary>
    public void Write(TextWriter stdout, Action<Stream> write)
    {
        using var buffer = new MemoryStream();
        write(buffer);
        Write(stdout, System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length).TrimEnd('\n'));
    }
}
