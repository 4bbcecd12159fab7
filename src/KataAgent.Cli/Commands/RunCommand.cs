using System.CommandLine;
using KataAgent.Api.Server;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

/// <summary>`kata-agent run`: one session, one run, gone; the exit code is the code's.</summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var session = new SessionOptions();
        var code = new Option<string?>("--code", "-c") { Description = "Python code to run" };
        var timeout = new Option<double?>("--timeout") { Description = "Stop the code after this many seconds (exit code 124)" };
        var keep = new Option<bool>("--keep") { Description = "Keep the session afterwards (prints its id; remove it with session rm)" };
        var raw = Runs.RawOption();
        var media = new MediaWriter.Options();
        var args = new Argument<string[]>("IMAGE/FILE")
        {
            Description = $"[IMAGE] [FILE | -]: the image (default {BaseImages.DefaultImage}) and the file to run (- reads stdin)",
            Arity = new ArgumentArity(0, 2),
        };
        var command = new Command("run", $"""
            Run code in a fresh session and remove it afterwards; output streams live, the exit code is the code's.
            Media output (plots, images) is written to files in ./kata-agent-media (see --media-dir).
            Uses a running 'kata-agent serve' if there is one, else starts an agent in this process.

            Examples:
              kata-agent run -c 'print(6*7)'
              kata-agent run --runtime gvisor script.py
              echo 'import sys; print(sys.version)' | kata-agent run -
              kata-agent run {BaseImages.DefaultImage} --cpu 2 --mem 2g -e MODE=fast -v /data:/home/work/data:ro train.py
            """);
        session.AddTo(command);
        command.Options.Add(code);
        command.Options.Add(timeout);
        command.Options.Add(keep);
        command.Options.Add(raw);
        media.AddTo(command);
        command.Arguments.Add(args);
        command.SetAction(async (parse, ct) =>
        {
            var (image, file) = SplitArguments(parse.GetValue(args) ?? [], parse.GetValue(code) is not null);
            var text = await Runs.ReadCodeAsync(parse.GetValue(code), file, ct);
            var request = session.ToRequest(parse, image);
            var runId = Runs.NewRunId();
            var mediaWriter = media.Create(parse, runId);

            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: true, ct);
            var client = connection.Client;
            var info = await client.Agent.GetInfoAsync(new GetInfoRequest(), cancellationToken: ct);
            await SessionSteps.EnsureImageAsync(client, image, ct);
            var created = await SessionSteps.CreateAsync(client, request, ct);
            // Once the session exists: a failed run says one thing, its error.
            if (string.IsNullOrEmpty(request.RuntimeClass) && info.FallbackWarning.Length > 0)
                Output.Warn(info.FallbackWarning);
            try
            {
                var start = new ExecuteRequest
                {
                    KernelId = created.KernelId,
                    RunId = runId,
                    Mode = ExecutionMode.Query,
                    Text = text,
                    ExecTimeoutSeconds = parse.GetValue(timeout) ?? 0,
                };
                // With the code on stdin, input() answers come from the terminal.
                var input = file == "-" && File.Exists("/dev/tty") ? OpenTty() : Console.In;
                return await Runs.RunToEndAsync(client, start, input, parse.GetValue(raw), mediaWriter, ct);
            }
            finally
            {
                if (parse.GetValue(keep))
                    Output.Info($"kept session {created.KernelId}");
                else
                    await SessionSteps.DestroyQuietlyAsync(client, created.KernelId);
            }
        });
        return command;
    }

    /// <summary>run's positionals: [IMAGE] [FILE|-]; a lone one is the file when it is "-" or exists, else the image.</summary>
    internal static (string Image, string? File) SplitArguments(string[] values, bool hasCode)
    {
        // An unknown option lands among the positionals: report it as what it is.
        if (values.FirstOrDefault(v => v.StartsWith('-') && v != "-") is { } unknown)
            throw new CliException($"unknown option '{unknown}' (see: kata-agent run --help)", 2);
        return Split(values, hasCode);
    }

    private static (string Image, string? File) Split(string[] values, bool hasCode) => values switch
    {
        [] => (BaseImages.DefaultImage, null),
        [var one] when hasCode => (one, null),
        [var one] when one == "-" || File.Exists(one) => (BaseImages.DefaultImage, one),
        [var one] => throw new CliException($"'{one}' is neither a file nor '-': give code with -c, a FILE, or - (to run it in image '{one}', add the code too)", 2),
        [var image, var file] when !hasCode => (image, file),
        _ => throw new CliException("give the code either with -c or as a FILE, not both", 2),
    };

    private static TextReader OpenTty()
    {
        try
        {
            return new StreamReader(new FileStream("/dev/tty", FileMode.Open, FileAccess.Read));
        }
        catch (IOException)
        {
            return TextReader.Null;
        }
    }
}
