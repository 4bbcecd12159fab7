using KataAgent.Cli.Config;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;

namespace KataAgent.Cli;

/// <summary>Logs go to stderr, plain or JSON, with scopes (a session's KernelId rides along in a scope).</summary>
internal static class Logging
{
    public static ILoggerFactory Create(LoggingOptions options, LogLevel? floor = null) =>
        LoggerFactory.Create(builder =>
        {
            var level = floor is { } f && f > options.Level ? f : options.Level;
            builder.SetMinimumLevel(level);
            // ASP.NET Core's per-request lines are noise at info; the services log what matters.
            builder.AddFilter("Microsoft", level > LogLevel.Warning ? level : LogLevel.Warning);
            builder.AddConsole(c => c.LogToStandardErrorThreshold = LogLevel.Trace);
            if (options.Format == LogFormat.Json)
            {
                builder.AddJsonConsole(o =>
                {
                    o.IncludeScopes = true;
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    o.UseUtcTimestamp = true;
                });
            }
            else
            {
                builder.AddSimpleConsole(o =>
                {
                    o.IncludeScopes = true;
                    o.SingleLine = true;
                    o.TimestampFormat = "HH:mm:ss ";
                    o.ColorBehavior = Console.IsErrorRedirected ? LoggerColorBehavior.Disabled : LoggerColorBehavior.Default;
                });
            }
        });
}
