using System.CommandLine;
using Grpc.Core;
using KataAgent.Api.Client;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

/// <summary>Drives one run to its end: streams output live, answers waiting-input from stdin, continues batch steps.</summary>
internal static class Runs
{
    public const int TimeoutExitCode = 124;

    /// <summary>Output of the guest's code: escaped on a terminal (<see cref="TerminalText.Output"/>) unless the user asked for raw.</summary>
    public static Option<bool> RawOption() => new("--raw")
    {
        Description = "Write the code's output byte for byte even to a terminal (by default escape sequences other than colours are shown escaped there; pipes and files always get it raw)",
    };

    public static async Task<int> RunToEndAsync(ApiClient client, ExecuteRequest start, TextReader input, bool raw, MediaWriter media,
        CancellationToken cancellationToken)
    {
        var output = new OutputWriter(raw, media);
        var result = await StreamAsync(client.Sessions.Execute(start, cancellationToken: cancellationToken), output, cancellationToken);
        while (true)
        {
            switch (result.Status)
            {
                case "finished":
                    return result.HasExitCode ? result.ExitCode : 0;
                case "exec-timeout":
                    Output.Warn($"the run exceeded its time limit ({start.ExecTimeoutSeconds:0.#} s) and was stopped");
                    return TimeoutExitCode;
                case "waiting-input":
                    // The code asked for input (its prompt is already on stdout): answer with one line of ours.
                    var line = await input.ReadLineAsync(cancellationToken) ?? "";
                    result = await StreamAsync(client.Sessions.SendInput(new SendInputRequest
                    {
                        KernelId = start.KernelId,
                        RunId = start.RunId,
                        Text = line,
                    }, cancellationToken: cancellationToken), output, cancellationToken);
                    break;
                default:
                    // clean-finished, build-finished (batch steps) and continued: collect the rest.
                    result = await StreamAsync(client.Sessions.Execute(new ExecuteRequest
                    {
                        KernelId = start.KernelId,
                        RunId = start.RunId,
                        Mode = ExecutionMode.Continue,
                    }, cancellationToken: cancellationToken), output, cancellationToken);
                    break;
            }
        }
    }

    private static async Task<ExecutionResult> StreamAsync(AsyncServerStreamingCall<ExecuteReply> call, OutputWriter output, CancellationToken cancellationToken)
    {
        using (call)
        {
            ExecutionResult? result = null;
            await foreach (var reply in call.ResponseStream.ReadAllAsync(cancellationToken))
            {
                if (reply.KindCase == ExecuteReply.KindOneofCase.Result)
                {
                    result = reply.Result;
                    continue;
                }
                output.Write(reply.Output);
            }
            return result ?? throw new CliException("the agent ended the run without a result");
        }
    }

    /// <summary>Where a run's console items go, escaped for a terminal unless raw.</summary>
    internal sealed class OutputWriter(bool raw, MediaWriter media)
    {
        private readonly bool _escapeOut = TerminalText.ShouldEscape(!Console.IsOutputRedirected, raw);
        private readonly bool _escapeErr = TerminalText.ShouldEscape(!Console.IsErrorRedirected, raw);

        public void Write(ConsoleItem item)
        {
            switch (item.Kind)
            {
                case "stdout":
                    Console.Out.Write(_escapeOut ? TerminalText.Output(item.Data) : item.Data);
                    Console.Out.Flush();
                    break;
                case "stderr":
                    Console.Error.Write(_escapeErr ? TerminalText.Output(item.Data) : item.Data);
                    Console.Error.Flush();
                    break;
                case "media":
                    Console.Error.WriteLine(TerminalText.Name(media.Write(item)));
                    Console.Error.Flush();
                    break;
                default:
                    Console.Error.WriteLine($"[{TerminalText.Name(item.Kind)}] {TerminalText.Name(Truncate(item.Data))}");
                    break;
            }
        }
    }

    private static string Truncate(string s) => s.Length <= 200 ? s : s[..200] + "…";

    /// <summary>The code to run: -c text, a file, or "-" for stdin.</summary>
    public static async Task<string> ReadCodeAsync(string? code, string? file, CancellationToken cancellationToken)
    {
        if (code is not null && file is not null)
            throw new CliException("give the code either with -c or as a FILE (or - for stdin), not both", 2);
        if (code is not null)
            return code;
        if (file is null)
            throw new CliException("no code to run: pass -c CODE, a FILE, or - to read stdin", 2);
        if (file == "-")
            return await Console.In.ReadToEndAsync(cancellationToken);
        if (!File.Exists(file))
            throw new CliException($"{file}: no such file", 2);
        return await File.ReadAllTextAsync(file, cancellationToken);
    }

    public static string NewRunId() => "run-" + Guid.NewGuid().ToString("N")[..12];
}
