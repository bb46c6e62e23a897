namespace Faultline.Cli;

/// <summary>How to start this same faultline again (migrate's source, a restore's page handler): the native build or the apphost itself, or dotnet + the CLI's dll beside it.</summary>
internal static class ThisProgram
{
    public static (string File, string[] Prefix) Locate(string purpose)
    {
        var process = Environment.ProcessPath ?? throw new FaultlineException($"cannot tell which program to start as {purpose}");
        if (Path.GetFileNameWithoutExtension(process) != "dotnet") return (process, []);
        var dll = Path.Combine(AppContext.BaseDirectory, typeof(ThisProgram).Assembly.GetName().Name + ".dll");
        return File.Exists(dll) ? (process, [dll]) : throw new FaultlineException($"cannot find {dll} to start as {purpose}");
    }
}
