namespace Faultline.Snapshot;

/// <summary>
/// A snapshot that can't be restored as it is (missing or truncated file, another format version, a layout that does
/// not match this build, a checksum that fails): bad input, exit code 2, one line naming the file and what is wrong.
/// </summary>
public sealed class SnapshotException(string message, Exception? inner = null) : FaultlineException(message, 2, inner);
