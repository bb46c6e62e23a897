namespace Faultline.Cli;

/// <summary>
/// Checks an output path when the command line is parsed, before any VM is built: its directory exists, the path is
/// not a directory, and a file can be created (or opened for writing) there. A file the check creates is removed again.
/// </summary>
internal static class OutputPaths
{
    public static bool TryCheck(string text, out string fullPath, out string error)
    {
        fullPath = "";
        if (text.Trim().Length == 0) { error = "needs a file name (or - for stdout)"; return false; }
        try { fullPath = Path.GetFullPath(text); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            error = $"{text} is not a file name";
            return false;
        }
        if (Directory.Exists(fullPath)) { error = $"{text} is a directory"; return false; }
        var dir = Path.GetDirectoryName(fullPath) ?? "/";
        if (!Directory.Exists(dir)) { error = $"{text}: no such directory {dir}"; return false; }
        try
        {
            if (File.Exists(fullPath))
            {
                using (new FileStream(fullPath, FileMode.Open, FileAccess.Write)) { }
            }
            else
            {
                using (new FileStream(fullPath, FileMode.CreateNew, FileAccess.Write)) { }
                File.Delete(fullPath);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            error = $"{text}: cannot write there ({Reason(e)})";
            return false;
        }
        error = "";
        return true;
    }

    /// <summary>Why a file could not be written, in a few words rather than .NET's sentence.</summary>
    public static string Reason(Exception e) => e switch
    {
        UnauthorizedAccessException => "permission denied",
        DirectoryNotFoundException => "no such directory",
        FileNotFoundException => "this file system does not take new files",   // procfs, sysfs: ENOENT on create
        IOException { HResult: var h } when (h & 0xFFFF) == 30 => "read-only file system",   // EROFS
        IOException { HResult: var h } when (h & 0xFFFF) == 28 => "no space left on the device",   // ENOSPC
        _ => ErrorReport.OneLine(e.Message),
    };
}
