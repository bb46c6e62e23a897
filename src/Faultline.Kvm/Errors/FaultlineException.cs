namespace Faultline;

/// <summary>Base of every expected failure: a one-line message and the process exit code the CLI returns.</summary>
public class FaultlineException(string message, int exitCode = 1, Exception? inner = null) : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;
}

/// <summary>A syscall or ioctl failed; carries errno.</summary>
public sealed class KvmException(string call, int errno)
    : FaultlineException($"{call} failed: {Interop_Describe(errno)}")
{
    public string Call { get; } = call;
    public int Errno { get; } = errno;
    private static string Interop_Describe(int e) => Faultline.Kvm.Interop.Errno.Describe(e);
}

/// <summary>The host lacks a device, capability or feature this run needs.</summary>
public sealed class HostSupportException(string message) : FaultlineException(message, 3);

/// <summary>The guest did something unexpected: an unexpected exit, a shutdown, a check it reported as failed.</summary>
public sealed class GuestException(string message) : FaultlineException(message, 4);

/// <summary>A migration peer, frame or checksum was wrong.</summary>
public class MigrationException(string message, Exception? inner = null) : FaultlineException(message, 5, inner);

/// <summary>
/// The connection to the migration peer broke: closed, reset, shut down, or silent past its timeout. Nothing the peer
/// sent was wrong, so a session in post-copy may rejoin over a new connection and go on.
/// </summary>
public sealed class LinkLostException(string message, Exception? inner = null) : MigrationException(message, inner);

/// <summary>Bad input from the user: exit code 2.</summary>
public sealed class UsageException(string message) : FaultlineException(message, 2);

/// <summary>A page a fault needs can't be had: its source failed or went silent. Exit code 5, as a failed migration.</summary>
public sealed class PageUnavailableException(string message, Exception? inner = null) : FaultlineException(message, 5, inner);

/// <summary>The migration peer ended the migration itself (an Abort frame) and said why (<see cref="Reason"/>).</summary>
public sealed class PeerAbortedException(string reason) : MigrationException($"peer aborted: {reason}")
{
    public string Reason { get; } = reason;
}
