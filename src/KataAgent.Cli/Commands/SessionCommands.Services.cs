using System.CommandLine;
using System.Globalization;
using KataAgent.Api.V1;

namespace KataAgent.Cli.Commands;

// `session service start|stop|apps`: service apps (jupyter, ttyd, the image's own) in a session.
internal static partial class SessionCommands
{
    private static Command ServiceCommand()
    {
        var command = new Command("service", """
            Start, stop and list a session's service apps (what the runner can start: its built-ins, the image's
            service definitions, the runtime's apps such as jupyter).

            Examples:
              kata-agent session service apps $id
              kata-agent session service start $id jupyter --port 8090 --protocol http
              kata-agent session service start $id web --port 8080 -- python3 -m http.server {port}
              kata-agent session service stop $id web
            """);
        command.Subcommands.Add(ServiceStartCommand());
        command.Subcommands.Add(ServiceStopCommand());
        command.Subcommands.Add(ServiceAppsCommand());
        return command;
    }

    private static Command ServiceStartCommand()
    {
        var id = KernelIdArgument();
        var name = new Argument<string>("NAME") { Description = "The app to start; the runner finds its command by the name" };
        var commandLine = new Argument<string[]>("COMMAND") { Description = "Optional, after --: run this instead of what the name resolves to ({port} is the first port)", Arity = ArgumentArity.ZeroOrMore };
        var ports = new Option<int[]>("--port", "-p") { Description = "A port of the app inside the session (repeatable; the first is the one waited for)", AllowMultipleArgumentsPerToken = false };
        var protocol = new Option<string?>("--protocol") { Description = "tcp (default), http, preopen, vnc or rdp" };
        var arguments = new Option<string[]>("--arg") { Description = "NAME[=VALUE] for options.arguments (repeatable; repeat a NAME for several values); the app must allow it" };
        var envs = new Option<string[]>("--env", "-e") { Description = "K=V for options.envs (repeatable); the app must allow it" };
        var timeout = new Option<int?>("--timeout") { Description = "Seconds the runner waits for the port (default 30)" };
        var command = new Command("start", """
            Start a service app in a session. Without a COMMAND the runner resolves NAME, as Backend.AI's does.

            Examples:
              kata-agent session service start $id jupyter --port 8090 --protocol http
              kata-agent session service start $id web -p 8080 -- python3 -m http.server {port}
            """);
        command.Arguments.Add(id);
        command.Arguments.Add(name);
        command.Arguments.Add(commandLine);
        foreach (var o in new Option[] { ports, protocol, arguments, envs, timeout })
            command.Options.Add(o);
        command.SetAction(async (parse, ct) =>
        {
            var request = new StartServiceRequest
            {
                KernelId = parse.GetValue(id)!,
                Name = parse.GetValue(name)!,
                Protocol = parse.GetValue(protocol) ?? "",
                StartTimeoutSeconds = parse.GetValue(timeout) ?? 0,
            };
            request.Command.AddRange(parse.GetValue(commandLine) ?? []);
            request.Ports.AddRange(parse.GetValue(ports) ?? []);
            foreach (var item in parse.GetValue(arguments) ?? [])
            {
                var eq = item.IndexOf('=', StringComparison.Ordinal);
                if (eq == 0)
                    throw new CliException($"--arg: '{item}' has no name (NAME or NAME=VALUE)", 2);
                var argName = eq < 0 ? item : item[..eq];
                if (!request.Arguments.TryGetValue(argName, out var values))
                    request.Arguments[argName] = values = new ServiceArgument();
                if (eq > 0)
                    values.Values.Add(item[(eq + 1)..]);
            }
            foreach (var item in parse.GetValue(envs) ?? [])
            {
                var eq = item.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0)
                    throw new CliException($"--env: '{item}' is not K=V", 2);
                request.Envs[item[..eq]] = item[(eq + 1)..];
            }
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await connection.Client.Sessions.StartServiceAsync(request, cancellationToken: ct);
            if (reply.Status is "started" or "running")
            {
                Output.Info($"service {TerminalText.Name(request.Name)} {reply.Status}");
                await PrintServiceAddressesAsync(connection, request.KernelId, request.Name, ct);
                return 0;
            }
            throw new CliException($"service {TerminalText.Name(request.Name)} {reply.Status}: {TerminalText.Name(reply.Error)}");
        });
        return command;
    }

    // Where the started app answers on the host: its published ports, and its URL when the image gives a url_template.
    private static async Task PrintServiceAddressesAsync(AgentConnection connection, string kernelId, string name, CancellationToken ct)
    {
        var session = await connection.Client.Sessions.GetSessionAsync(new SessionRef { KernelId = kernelId }, cancellationToken: ct);
        var template = session.ServicePorts.FirstOrDefault(p => p.Name == name)?.UrlTemplate ?? "";
        foreach (var port in session.Ports.Where(p => p.Name == name))
        {
            var url = template.Length > 0
                ? "  " + template.Replace("{host}", port.HostIp, StringComparison.Ordinal).Replace("{port}", port.HostPort.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)
                : "";
            await Console.Out.WriteLineAsync($"{TerminalText.Name(name)} {port.ContainerPort} -> {port.HostIp}:{port.HostPort}{TerminalText.Name(url)}");
        }
    }

    private static Command ServiceStopCommand()
    {
        var id = KernelIdArgument();
        var name = new Argument<string>("NAME") { Description = "The service to stop" };
        var command = new Command("stop", "Stop a service app in a session.\n\nExamples:\n  kata-agent session service stop $id jupyter");
        command.Arguments.Add(id);
        command.Arguments.Add(name);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            await connection.Client.Sessions.StopServiceAsync(new StopServiceRequest { KernelId = parse.GetValue(id)!, Name = parse.GetValue(name)! }, cancellationToken: ct);
            return 0;
        });
        return command;
    }

    private static Command ServiceAppsCommand()
    {
        var id = KernelIdArgument();
        var name = new Argument<string?>("NAME") { Description = "Only this app", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("apps", "List the service apps the session's image defines.\n\nExamples:\n  kata-agent session service apps $id\n  kata-agent session service apps $id jupyter --json");
        command.Arguments.Add(id);
        command.Arguments.Add(name);
        command.Options.Add(GlobalOptions.Json);
        command.SetAction(async (parse, ct) =>
        {
            await using var connection = await AgentConnection.ConnectAsync(new GlobalSettings(parse), allowInProcess: false, ct);
            var reply = await connection.Client.Sessions.GetAppsAsync(new GetAppsRequest { KernelId = parse.GetValue(id)!, Name = parse.GetValue(name) ?? "" }, cancellationToken: ct);
            if (parse.GetValue(GlobalOptions.Json))
            {
                Output.Json(reply);
                return 0;
            }
            if (reply.Status != "done")
                throw new CliException($"the runner could not list its apps ({TerminalText.Name(reply.Status)}): {TerminalText.Name(reply.Error)}");
            foreach (var app in reply.Apps)
            {
                await Console.Out.WriteLineAsync(TerminalText.Name(app.Name)
                    + (app.HasUrlTemplate ? $"  url={TerminalText.Name(app.UrlTemplate)}" : "")
                    + (app.AllowedArguments.Count > 0 ? $"  arguments={TerminalText.Name(string.Join(',', app.AllowedArguments))}" : "")
                    + (app.AllowedEnvs.Count > 0 ? $"  envs={TerminalText.Name(string.Join(',', app.AllowedEnvs))}" : ""));
            }
            return 0;
        });
        return command;
    }
}
