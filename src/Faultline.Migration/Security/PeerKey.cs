using System.Security.Cryptography;
using System.Text;

namespace Faultline.Migration.Security;

/// <summary>
/// The pre-shared key both ends of a migration hold (<c>--psk-file</c>): the file's bytes, trailing whitespace
/// trimmed (so <c>openssl rand -hex 32 &gt; key</c> and a raw 32-byte file both work), at least
/// <see cref="MinBytes"/>. A file that is not there, can't be read, is too short or too long, or that anyone but its
/// owner may read or write is refused with one line naming it: a key others can read is no key.
/// </summary>
public sealed class PeerKey
{
    /// <summary>128 bits: shorter keys can be searched.</summary>
    public const int MinBytes = 16;
    public const int MaxBytes = 4096;
    /// <summary>Bytes of a key <see cref="Generate"/>d for a run's own child (as hex in its file: twice this).</summary>
    public const int GeneratedBytes = 32;
    private const UnixFileMode Others = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    private readonly byte[] _key;

    private PeerKey(byte[] key) => _key = key;

    /// <summary>Where the key came from, for messages ("key file /etc/faultline/key", "a key generated for this run").</summary>
    public string Origin { get; private init; } = "";

    /// <summary>HMAC-SHA256 with this key over <paramref name="data"/> into <paramref name="mac"/> (32 bytes).</summary>
    internal void Mac(ReadOnlySpan<byte> data, Span<byte> mac) => HMACSHA256.HashData(_key, data, mac);

    /// <summary>Reads a key file; <paramref name="option"/> names it in the message ("--psk-file").</summary>
    public static PeerKey FromFile(string path, string option = "--psk-file")
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("key files are checked by their Unix mode");
        byte[] bytes;
        try
        {
            var mode = File.GetUnixFileMode(path);
            if ((mode & Others) != 0)
                throw new UsageException($"{option} {path}: the key is readable or writable by others (mode {Convert.ToString((int)mode, 8).PadLeft(4, '0')}); chmod 600 it");
            var info = new FileInfo(path);
            if (info.Length > MaxBytes * 2) throw new UsageException($"{option} {path}: {info.Length} bytes is not a key (at most {MaxBytes})");
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException) { throw new UsageException($"{option} {path}: no such file"); }
        catch (DirectoryNotFoundException) { throw new UsageException($"{option} {path}: no such file"); }
        catch (UnauthorizedAccessException) { throw new UsageException($"{option} {path}: cannot read it (permission denied)"); }
        catch (IOException e) { throw new UsageException($"{option} {path}: cannot read it ({e.Message})"); }
        var n = bytes.Length;
        while (n > 0 && bytes[n - 1] is (byte)'\n' or (byte)'\r' or (byte)' ' or (byte)'\t') n--;
        if (n < MinBytes) throw new UsageException($"{option} {path}: {n} bytes is too short for a key (at least {MinBytes}; e.g. openssl rand -hex 32 > {path})");
        if (n > MaxBytes) throw new UsageException($"{option} {path}: {n} bytes is not a key (at most {MaxBytes})");
        return new PeerKey(bytes[..n]) { Origin = $"key file {path}" };
    }

    /// <summary>A fresh random key (for a run that starts both ends itself and hands its child the key in a file).</summary>
    public static PeerKey Generate() =>
        new(Encoding.ASCII.GetBytes(Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(GeneratedBytes)))) { Origin = "a key generated for this run" };

    /// <summary>Writes the key to a new file only its owner may read (mode 0600), as <see cref="FromFile"/> reads it back.</summary>
    public void WriteTo(string path)
    {
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("key files are written with a Unix mode");
        using var f = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        f.Write(_key);
    }
}
