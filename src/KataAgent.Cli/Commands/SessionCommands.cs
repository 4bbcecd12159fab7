using System.CommandLine;

namespace KataAgent.Cli.Commands;

/// <summary>
/// `kata-agent session ...`: sessions of a running serve. The subcommands live in one file per subject:
/// SessionCommands.Lifecycle.cs (create, rm, restart, commit), .Pause.cs (pause, resume), .Inspect.cs (ls, show, logs, stats),
/// .Exec.cs (exec, input, interrupt), .Files.cs (cp, files) and .Services.cs (service start, stop, apps).
/// </summary>
internal static partial class SessionCommands
{
    public static Command Create()
    {
        var command = new Command("session", """
            Manage the sessions of a running 'kata-agent serve'.

            Examples:
              id=$(kata-agent session create --runtime gvisor)
              kata-agent session exec $id -c 'x = 41'
              kata-agent session exec $id -c 'print(x + 1)'
              kata-agent session cp data.csv $id:data.csv
              kata-agent session ls
              kata-agent session rm $id
            """);
        command.Subcommands.Add(CreateCommand());
        command.Subcommands.Add(ListCommand());
        command.Subcommands.Add(ShowCommand());
        command.Subcommands.Add(ExecCommand());
        command.Subcommands.Add(InputCommand());
        command.Subcommands.Add(InterruptCommand());
        command.Subcommands.Add(CopyCommand());
        command.Subcommands.Add(FilesCommand());
        command.Subcommands.Add(RemoveCommand());
        command.Subcommands.Add(RestartCommand());
        command.Subcommands.Add(LogsCommand());
        command.Subcommands.Add(StatsCommand());
        command.Subcommands.Add(CommitCommand());
        command.Subcommands.Add(PauseCommand());
        command.Subcommands.Add(ResumeCommand());
        command.Subcommands.Add(ExtendCommand());
        command.Subcommands.Add(AttachCommand());
        command.Subcommands.Add(RunsCommand());
        command.Subcommands.Add(ServiceCommand());
        command.Subcommands.Add(ShellCommand());
        command.Subcommands.Add(CommandsCommand());
        return command;
    }

    private static Argument<string> KernelIdArgument() => new("ID") { Description = "The session's kernel id (see: kata-agent session ls)" };
}
