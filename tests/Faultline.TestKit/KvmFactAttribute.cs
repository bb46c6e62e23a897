using Xunit;

namespace Faultline.TestKit;

/// <summary>A real-KVM test: skipped, with its reason, only where /dev/kvm or /dev/userfaultfd is absent.</summary>
public sealed class KvmFactAttribute : SkippableFactAttribute
{
    public KvmFactAttribute()
    {
        if (!File.Exists("/dev/kvm")) Skip = "/dev/kvm is absent: real-KVM test not run";
        else if (!File.Exists("/dev/userfaultfd")) Skip = "/dev/userfaultfd is absent: real-userfaultfd test not run";
    }
}

/// <summary>A parameterized real-KVM test (see <see cref="KvmFactAttribute"/>).</summary>
public sealed class KvmTheoryAttribute : SkippableTheoryAttribute
{
    public KvmTheoryAttribute()
    {
        if (!File.Exists("/dev/kvm")) Skip = "/dev/kvm is absent: real-KVM test not run";
        else if (!File.Exists("/dev/userfaultfd")) Skip = "/dev/userfaultfd is absent: real-userfaultfd test not run";
    }
}
