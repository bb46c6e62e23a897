namespace Faultline.TestKit;

public static class Units
{
    public const ulong KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
}
