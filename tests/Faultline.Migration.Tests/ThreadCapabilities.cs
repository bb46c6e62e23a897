using System.Runtime.InteropServices;

namespace Faultline.Migration.Tests;

/// <summary>
/// Capabilities are per thread on Linux, and a thread inherits its creator's: code run by <see cref="RunWithout"/> (and
/// every thread it starts) lacks one capability in its effective set, the way a process in a container lacks it.
/// </summary>
internal static partial class ThreadCapabilities
{
    public const int CAP_SYS_NICE = 23;
    private const uint LINUX_CAPABILITY_VERSION_3 = 0x20080522;

    /// <summary>Runs <paramref name="body"/> on a new thread whose effective set lacks <paramref name="capability"/> (below 32).</summary>
    public static void RunWithout(int capability, Action body)
    {
        Exception? error = null;
        var t = new Thread(() =>
        {
            try
            {
                Drop(capability);
                body();
            }
            catch (Exception e) { error = e; }
        }) { Name = "test-nocap", IsBackground = true };
        t.Start();
        t.Join();
        if (error is not null) throw new InvalidOperationException($"without capability {capability}: {error.Message}", error);
    }

    private static unsafe void Drop(int capability)
    {
        // SAFETY: struct __user_cap_header_struct {u32 version; int pid} and two struct __user_cap_data_struct
        // {u32 effective, permitted, inheritable} (version 3), all locals that outlive the calls; pid 0 = this thread.
        uint* header = stackalloc uint[2];
        uint* data = stackalloc uint[6];
        header[0] = LINUX_CAPABILITY_VERSION_3;
        header[1] = 0;
        if (Capget(header, data) != 0) throw new InvalidOperationException($"capget failed: errno {Marshal.GetLastPInvokeError()}");
        data[0] &= ~(1u << capability);
        if (Capset(header, data) != 0) throw new InvalidOperationException($"capset failed: errno {Marshal.GetLastPInvokeError()}");
    }

    [LibraryImport("libc", EntryPoint = "capget", SetLastError = true)]
    private static unsafe partial int Capget(uint* header, uint* data);

    [LibraryImport("libc", EntryPoint = "capset", SetLastError = true)]
    private static unsafe partial int Capset(uint* header, uint* data);
}
