namespace Faultline.Migration.Tests;

public sealed class StandbyThreadTests
{
    [Fact]
    public void Work_runs_once_on_the_thread_made_in_advance()
    {
        var t = new StandbyThread("fl-test-standby");
        string? ranOn = null;
        var runs = 0;
        t.Start(() => { ranOn = Thread.CurrentThread.Name; Interlocked.Increment(ref runs); });
        Assert.Throws<InvalidOperationException>(() => t.Start(() => Interlocked.Increment(ref runs)));
        t.Dispose();   // joins
        Assert.Equal("fl-test-standby", ranOn);
        Assert.Equal(1, runs);
    }

    [Fact]
    public async Task A_thread_that_never_got_work_ends_when_disposed()
    {
        var t = new StandbyThread("fl-test-idle");
        var done = Task.Run(t.Dispose);
        Assert.Same(done, await Task.WhenAny(done, Task.Delay(TimeSpan.FromSeconds(10))));
        t.Dispose();   // twice is fine
    }
}
