using System.Diagnostics;
using System.Text;

namespace KataAgent.Images;

/// <summary>The result of a child process: exit code and its interleaved stdout/stderr (the tail, if long).</summary>
public sealed record ProcessResult(int ExitCode, string Output);

/// <summary>Runs a child process asynchronously, capturing its output; cancellation kills its whole process tree.</summary>
public static class ChildProcess
{
    private const int MaxCapturedChars = 64 * 1024;

    public static async Task<ProcessResult> RunAsync(
        string fileName, IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        using var process = new Process { StartInfo = start };
        var output = new TailBuffer(MaxCapturedChars);
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new FileNotFoundException($"cannot start {fileName}: {e.Message}", fileName, e);
        }

        process.StandardInput.Close();
        var pumps = Task.WhenAll(
            PumpAsync(process.StandardOutput, output),
            PumpAsync(process.StandardError, output));
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // already exited
            }

            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            await pumps.ConfigureAwait(false);
            throw;
        }

        await pumps.ConfigureAwait(false);
        return new ProcessResult(process.ExitCode, output.ToString());
    }

    private static async Task PumpAsync(StreamReader reader, TailBuffer output)
    {
        var buffer = new char[4096];
        int n;
        while ((n = await reader.ReadAsync(buffer).ConfigureAwait(false)) > 0)
        {
            output.Append(buffer.AsSpan(0, n));
        }
    }

    private sealed class TailBuffer(int limit)
    {
        private readonly StringBuilder _text = new();
        private readonly Lock _lock = new();
        private bool _truncated;

        public void Append(ReadOnlySpan<char> chars)
        {
            lock (_lock)
            {
                _text.Append(chars);
                if (_text.Length > limit * 2)
                {
                    _text.Remove(0, _text.Length - limit);
                    _truncated = true;
                }
            }
        }

        public override string ToString()
        {
            lock (_lock)
            {
                var text = _text.Length > limit ? _text.ToString(_text.Length - limit, limit) : _text.ToString();
                return _truncated || _text.Length > limit ? "[... earlier output dropped ...]\n" + text : text;
            }
        }
    }
}
