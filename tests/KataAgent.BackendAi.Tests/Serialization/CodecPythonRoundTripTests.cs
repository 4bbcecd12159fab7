using System.Diagnostics;
using KataAgent.BackendAi.Serialization;

namespace KataAgent.BackendAi.Tests.Serialization;

/// <summary>
/// C# packs → CPython (the Backend.AI stand-ins, /usr/bin/python3) unpacks, checks the Python types and repacks →
/// C# compares the bytes with its own.
/// </summary>
public sealed class CodecPythonRoundTripTests
{
    private const string Python = "/usr/bin/python3";

    [SkippableFact]
    public async Task PythonReadsCSharpValuesAsBackendAiTypes_AndRepacksTheSameBytes()
    {
        Skip.IfNot(File.Exists(Python), "needs Debian's /usr/bin/python3 with python3-msgpack");
        var names = Golden.PackedNames().Where(n => n != "datetime_plus_0930").ToList();
        var cases = new Dictionary<object, object?>();
        foreach (var name in names)
        {
            cases[name] = GoldenValues.PackInput(name);
        }

        var reply = await RunPeerAsync(BackendAiCodec.Instance.Pack(cases));
        var results = Assert.IsType<Dictionary<object, object?>>(BackendAiCodec.Instance.Unpack(reply));
        Assert.False(results.ContainsKey("error"), $"Python peer failed: {results.GetValueOrDefault("error")}");
        Assert.Equal(names.Count, results.Count);
        foreach (var name in names)
        {
            var python = Assert.IsType<byte[]>(results[name]);
            var csharp = BackendAiCodec.Instance.Pack(GoldenValues.PackInput(name));
            Assert.True(python.AsSpan().SequenceEqual(csharp),
                $"{name}:\n python {Convert.ToHexString(python)}\n c#     {Convert.ToHexString(csharp)}");
        }
    }

    [SkippableFact]
    public async Task PythonRejectsWhatItShould_TheCheckIsNotVacuous()
    {
        // The peer's type checks must be able to fail: a plain dict where a ResourceSlot belongs is refused.
        Skip.IfNot(File.Exists(Python), "needs Debian's /usr/bin/python3 with python3-msgpack");
        var cases = new Dictionary<object, object?> { ["resource_slot"] = GoldenValues.Map(("cpu", 4m)) };
        var results = (Dictionary<object, object?>)BackendAiCodec.Instance.Unpack(await RunPeerAsync(BackendAiCodec.Instance.Pack(cases)))!;
        Assert.Contains("AssertionError", Assert.IsType<string>(results["error"]));
    }

    private static async Task<byte[]> RunPeerAsync(byte[] input)
    {
        var assets = Path.Combine(AppContext.BaseDirectory, "assets");
        var start = new ProcessStartInfo(Python, [Path.Combine(assets, "codec_roundtrip.py")])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.Environment["PYTHONPATH"] = Path.Combine(assets, "bai");
        start.Environment["PYTHONDONTWRITEBYTECODE"] = "1";
        using var process = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
            var stdout = new MemoryStream();
            var copy = process.StandardOutput.BaseStream.CopyToAsync(stdout, timeout.Token);
            await process.StandardInput.BaseStream.WriteAsync(input, timeout.Token);
            process.StandardInput.Close();
            await copy;
            await process.WaitForExitAsync(timeout.Token);
            Assert.True(process.ExitCode == 0, $"python exited {process.ExitCode}: {await stderr}");
            return stdout.ToArray();
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
    }
}
