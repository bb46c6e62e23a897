using System.Net.Sockets;
using Faultline.Migration.Transport;

namespace Faultline.Cli;

/// <summary>
/// Connect and listen failures in the user's words, from the <see cref="SocketError"/> of the SocketException the
/// transport keeps as the inner exception: "nothing listens at 127.0.0.1:7999" (ECONNREFUSED), "no such socket
/// file: /run/x.sock" (ENOENT on a unix path). A socket call that failed exits 1, as the README says; a connection
/// lost during the migration stays the migration's failure (5).
/// </summary>
internal static class NetworkErrors
{
    public const int ExitCode = 1;

    /// <summary>Before anything is built: a unix socket path whose directory does not exist can never be connected to.</summary>
    public static void CheckConnectable(MigrationAddress a)
    {
        if (UnixPath(a) is { } path && Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir && !Directory.Exists(dir))
            throw new FaultlineException($"no such socket file: {path} (no directory {dir})", ExitCode);
    }

    /// <summary>Before anything is built: the directory a unix socket would be created in exists.</summary>
    public static void CheckListenable(string option, MigrationAddress a)
    {
        if (UnixPath(a) is { } path && Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir && !Directory.Exists(dir))
            throw new UsageException($"{option} {a}: no such directory {dir} to create the socket in");
    }

    /// <summary>The user's words for a failed connect to <paramref name="a"/> (retried for <paramref name="tried"/>), or null if <paramref name="e"/> is not one.</summary>
    public static FaultlineException? ForConnect(Exception e, MigrationAddress a, TimeSpan tried)
    {
        if (Find(e) is not { } s) return null;
        var waited = $"tried for {tried.TotalSeconds:0.#} s";
        var message = s.SocketErrorCode switch
        {
            SocketError.ConnectionRefused when UnixPath(a) is { } p => $"nothing listens on the socket file {p} ({waited})",
            SocketError.ConnectionRefused => $"nothing listens at {a} ({waited})",
            SocketError.AddressNotAvailable when UnixPath(a) is { } p => $"no such socket file: {p} ({waited})",   // ENOENT
            SocketError.AddressNotAvailable => $"cannot connect to {a}: that address is not available here",
            SocketError.AccessDenied => $"cannot connect to {a}: permission denied",
            SocketError.TimedOut or SocketError.WouldBlock or SocketError.InProgress => $"no answer from {a} within {tried.TotalSeconds:0.#} s",
            SocketError.NetworkUnreachable or SocketError.HostUnreachable or SocketError.NetworkDown => $"cannot connect to {a}: no route to that host",
            _ => null,
        };
        return message is null ? null : new FaultlineException(message, ExitCode, e);
    }

    /// <summary>The user's words for a failed listen on <paramref name="a"/>, or null if <paramref name="e"/> is not one.</summary>
    public static FaultlineException? ForListen(Exception e, MigrationAddress a)
    {
        if (Find(e) is not { } s) return null;
        var why = s.SocketErrorCode switch
        {
            SocketError.AddressAlreadyInUse => "another process listens there (address in use)",
            SocketError.AddressNotAvailable when UnixPath(a) is { } p => $"no such directory {Path.GetDirectoryName(Path.GetFullPath(p))}",
            SocketError.AddressNotAvailable => "that IP address is not one of this host's",
            SocketError.AccessDenied => "permission denied",
            var other => other.ToString(),
        };
        return new FaultlineException($"cannot listen on {a}: {why}", ExitCode, e);
    }

    private static string? UnixPath(MigrationAddress a) => a.IsUnix ? a.Text["unix:".Length..] : null;

    private static SocketException? Find(Exception? e)
    {
        for (; e is not null; e = e.InnerException)
            if (e is SocketException s) return s;
        return null;
    }
}
