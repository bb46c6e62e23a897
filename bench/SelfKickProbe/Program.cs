using System.Diagnostics;
using System.Globalization;
using Faultline.Guest;
using Faultline.Kvm;

// What a SelfKickTimer costs a guest and what it does to a pause, on two spinning CPL3 vCPUs (Workload.Spin: inc rbx; jmp):
//   SelfKickProbe cost  PERIOD_US SECONDS   guest iterations/s and timer exits/s with the timers armed (0: no timer)
//   SelfKickProbe pause PERIOD_US TRIALS    another thread sets a pause flag and kicks both vCPUs; time until both saw it
// Run each under `flock /work/bench.lock`; docs/migration.md ("The pause") has the numbers.
if (args.Length != 3 || args[0] is not ("cost" or "pause"))
{
    Console.Error.WriteLine("usage: SelfKickProbe cost|pause PERIOD_US SECONDS|TRIALS");
    return 2;
}
var periodUs = double.Parse(args[1], CultureInfo.InvariantCulture);
var count = int.Parse(args[2], CultureInfo.InvariantCulture);
using var m = GuestMachine.Create(new MachineConfig(2, 2 * 64 * 1024));
foreach (var v in m.Vcpus) m.Image.Boot(v, Workload.Spin, m.ArgsFor(v.Id), PrivilegeLevel.User);
var s = new Shared();
var threads = new Thread[2];
for (var i = 0; i < threads.Length; i++)
{
    var id = i;
    threads[i] = new Thread(() => VcpuLoop(m.Vcpus[id], id, periodUs, s)) { Name = $"fl-vcpu{id}" };
    threads[i].Start();
}
s.Ready.Wait();
var start = Stopwatch.GetTimestamp();
if (args[0] == "cost")
{
    s.Armed = true;
    foreach (var v in m.Vcpus) v.Kick();   // the vCPU threads arm at their next exit
    Thread.Sleep(100);
    var exits0 = s.Exits.Sum();
    var sw = Stopwatch.StartNew();
    Thread.Sleep(count * 1000);
    var seconds = sw.Elapsed.TotalSeconds;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"period {periodUs} us: {(s.Exits.Sum() - exits0) / seconds:0} exits/s (both vCPUs)"));
}
else
{
    var rnd = new Random(1);
    var lat = new List<double>();
    for (var k = 0; k < count; k++)
    {
        s.Armed = true;
        foreach (var v in m.Vcpus) v.Kick();
        Thread.Sleep(5 + rnd.Next(15));
        s.Release.Reset();
        s.Running = 2;
        var t0 = Stopwatch.GetTimestamp();
        Interlocked.Increment(ref s.Generation);
        s.Pause = true;
        foreach (var v in m.Vcpus) v.Kick();
        s.AllStopped.WaitOne();                // blocks (no spinning): the vCPU threads need the CPUs
        lat.Add(Stopwatch.GetElapsedTime(t0, Math.Max(s.StopTs[0], s.StopTs[1])).TotalMicroseconds);
        s.Armed = false;
        s.Pause = false;
        s.Release.Set();
    }
    lat.Sort();
    double P(double q) => lat[(int)Math.Min(lat.Count - 1, q * lat.Count)];
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"period {periodUs} us: both vCPUs out after p50 {P(0.5):0} us, p90 {P(0.9):0}, p99 {P(0.99):0}, max {lat[^1]:0}; over 1 ms in {lat.Count(x => x > 1000)} of {lat.Count}"));
}
var end = Stopwatch.GetTimestamp();
s.Quit = true;
s.Release.Set();
foreach (var t in threads) while (!t.Join(20)) foreach (var v in m.Vcpus) v.Kick();
ulong iterations = 0;
foreach (var v in m.Vcpus) iterations += v.GetRegs().Rbx;   // Spin counts its iterations in RBX
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"  guest: {iterations / Stopwatch.GetElapsedTime(start, end).TotalSeconds / 1e6:0} M iterations/s (both vCPUs); timer exits {m.Vcpus.Sum(v => v.SelfKicksDelivered)}, kicks {m.Vcpus.Sum(v => v.KicksDelivered)}"));
return 0;

static void VcpuLoop(Vcpu vcpu, int id, double periodUs, Shared s)
{
    vcpu.BindToCurrentThread();
    using var timer = SelfKickTimer.CreateForCurrentThread(vcpu);
    s.Ready.Signal();
    var seen = 0;
    while (!s.Quit)
    {
        if (s.Pause && Volatile.Read(ref s.Generation) != seen)
        {
            seen = Volatile.Read(ref s.Generation);
            s.StopTs[id] = Stopwatch.GetTimestamp();
            timer.Disarm();
            if (Interlocked.Decrement(ref s.Running) == 0) s.AllStopped.Set();
            s.Release.WaitOne();
            continue;
        }
        if (periodUs > 0 && !timer.IsArmed && s.Armed) timer.Arm(TimeSpan.FromMicroseconds(periodUs));
        var exit = vcpu.Run();
        s.Exits[id]++;
        if (exit.Kind != VcpuExitKind.Interrupted) throw new Faultline.GuestException($"vCPU {id}: {exit}");
    }
    vcpu.UnbindThread();
}

internal sealed class Shared
{
    public volatile bool Pause, Armed, Quit;
    public int Running, Generation;
    public readonly long[] StopTs = new long[2];
    public readonly long[] Exits = new long[2];
    public readonly CountdownEvent Ready = new(2);
    public readonly AutoResetEvent AllStopped = new(false);
    public readonly ManualResetEvent Release = new(true);
}
