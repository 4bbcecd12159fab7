using System.CommandLine;
using KataAgent.Api.V1;
using Spectre.Console;

namespace KataAgent.Cli.Commands;

// `session ls --ended`: the sessions that ended within the retention (tombstones), with how and when.
internal static partial class SessionCommands
{
    private static Option<bool> EndedOption() => new("--ended")
    {
        Description = "List the sessions that ended (kept for timeouts.ended_session_retention, default 1 h) with their end reason",
    };

    private static int ListEnded(ListSessionsReply reply, bool json)
    {
        var ended = new ListSessionsReply();
        ended.Sessions.AddRange(reply.Sessions.Where(s => s.EndReason is not null && s.State == "destroyed"));
        if (json)
        {
            Output.Json(ended);
            return 0;
        }
        var table = new Table().Border(TableBorder.Simple);
        foreach (var column in new[] { "ID", "IMAGE", "RUNTIME", "CREATED", "ENDED" })
            table.AddColumn(column);
        foreach (var s in ended.Sessions)
        {
            table.AddRow(Markup.Escape(s.KernelId), Markup.Escape(TerminalText.Name(s.Image)), Markup.Escape(s.RuntimeClass),
                Age(s.CreatedAt.ToDateTimeOffset()), Markup.Escape(EndedText(s.EndReason)));
        }
        Output.Out.Write(table);
        if (ended.Sessions.Count == 0)
            Output.Info("no ended sessions (ended sessions are kept for timeouts.ended_session_retention)");
        return 0;
    }
}
