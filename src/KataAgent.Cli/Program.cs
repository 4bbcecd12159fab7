using System.CommandLine;
using Grpc.Core;
using KataAgent.Cli;
using KataAgent.Cli.Commands;
using KataAgent.Cli.Config;

// kata-agent: every failure is one line on stderr and a non-zero exit code; usage errors exit 2.
var root = new RootCommand("""
    kata-agent: run code in isolated sessions (Kata Containers microVMs, gVisor, or runc for development).

    Examples:
      kata-agent run -c 'print(6*7)'
      kata-agent serve
      kata-agent session create --runtime gvisor
      kata-agent doctor
    """);
root.Options.Add(GlobalOptions.Config);
root.Options.Add(GlobalOptions.Socket);
root.Options.Add(GlobalOptions.Address);
root.Options.Add(GlobalOptions.Verbose);
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(ServeCommand.Create());
root.Subcommands.Add(SessionCommands.Create());
root.Subcommands.Add(ImageCommands.Create());
root.Subcommands.Add(EventsCommand.Create());
root.Subcommands.Add(DoctorCommand.Create());
root.Subcommands.Add(VersionCommand.Create());
root.Subcommands.Add(PoolCommands.Create());

var parse = root.Parse(args);
if (parse.Errors.Count > 0)
{
    await Console.Error.WriteLineAsync($"error: {parse.Errors[0].Message} (see: kata-agent {string.Join(' ', CommandPath(parse.CommandResult.Command))} --help)".Replace("  ", " ", StringComparison.Ordinal));
    return 2;
}
var verbose = parse.GetValue(GlobalOptions.Verbose);
try
{
    return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (CliException e)
{
    return Fail(e.Message, e.ExitCode);
}
catch (ConfigException e)
{
    return Fail("config: " + string.Join("; ", e.Problems), 2);
}
catch (RpcException e)
{
    return Fail(e.StatusCode == StatusCode.Unavailable && e.Status.Detail.Contains("socket", StringComparison.OrdinalIgnoreCase)
        ? $"the agent is not reachable: {e.Status.Detail}"
        : e.Status.Detail.Length > 0 ? e.Status.Detail : e.StatusCode.ToString(), 1);
}
catch (OperationCanceledException)
{
    return Fail("cancelled", 130);
}
catch (Exception e) when (e is InvalidOperationException or ArgumentException or IOException or UnauthorizedAccessException
    or KataAgent.Containerd.ContainerdException or TimeoutException or KataAgent.Images.ImageBuildException)
{
    return Fail(e.Message, 1);
}
catch (Exception e) when (e is not OutOfMemoryException)
{
    // Anything else is a defect of ours: still one line, the trace only when asked for.
    return Fail(verbose ? e.ToString() : $"{e.Message} ({e.GetType().Name}; --verbose shows the stack trace)", 1);
}

static int Fail(string message, int exitCode)
{
    // Multi-line messages (a runner log tail) keep their lines; the first says what went wrong.
    Console.Error.WriteLine("error: " + message);
    return exitCode;
}

static IEnumerable<string> CommandPath(Command command)
{
    var names = new Stack<string>();
    for (var c = command; c is not null && c is not RootCommand; c = c.Parents.OfType<Command>().FirstOrDefault())
        names.Push(c.Name);
    return names;
}
