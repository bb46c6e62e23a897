using Faultline.Kvm.Threads;

namespace Faultline.Kvm.Tests;

public sealed class WakeEventTests
{
    [Fact]
    public void A_signal_to_an_armed_sleeper_wakes_it_and_one_to_nobody_writes_nothing()
    {
        using var wake = new WakeEvent();
        wake.Signal();                                  // nobody armed: no eventfd write
        Assert.Equal(0, wake.Writes);

        var woke = new ManualResetEventSlim();
        var armed = new ManualResetEventSlim();
        var t = new Thread(() => { wake.Arm(); armed.Set(); wake.Wait(); woke.Set(); });
        t.Start();
        armed.Wait();
        Assert.False(woke.Wait(100));                   // armed and asleep: stays asleep without a signal
        wake.Signal();
        Assert.True(woke.Wait(5000));
        t.Join();
        Assert.Equal(1, wake.Writes);
        wake.Signal();                                  // the sleeper's Wait disarmed it
        Assert.Equal(1, wake.Writes);
    }

    [Fact]
    public void No_hand_off_is_lost_between_a_counting_signaller_and_a_sleeper()
    {
        // the pattern the delivery thread uses: the sleeper arms, checks the count, then waits
        using var wake = new WakeEvent();
        const int Items = 200_000;
        long published = 0, consumed = 0;
        var consumer = new Thread(() =>
        {
            while (consumed < Items)
            {
                if (Volatile.Read(ref published) > consumed) { consumed++; continue; }
                wake.Arm();
                if (Volatile.Read(ref published) > consumed) wake.Disarm();
                else wake.Wait();
            }
        });
        consumer.Start();
        var producers = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            for (var i = 0; i < Items / 2; i++)
            {
                Interlocked.Increment(ref published);
                wake.Signal();
                if (i % 64 == 0) Thread.Yield();      // let the consumer catch up and sleep now and then
            }
        })).ToList();
        producers.ForEach(p => p.Start());
        producers.ForEach(p => p.Join());
        Assert.True(consumer.Join(TimeSpan.FromSeconds(30)), $"consumer stuck at {consumed} of {Items}: a wake-up was lost");
        Assert.Equal(Items, consumed);
        Assert.True(wake.Writes > 0, "the consumer never slept: the test did not exercise the hand-off");
    }

    [Fact]
    public void SignalAlways_ends_the_next_wait_even_when_nobody_was_armed()
    {
        using var wake = new WakeEvent();
        wake.SignalAlways();
        var t = new Thread(wake.Wait);
        t.Start();
        Assert.True(t.Join(TimeSpan.FromSeconds(5)));
    }
}
