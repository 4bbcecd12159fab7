using System.Text.Json;
using System.Text.Json.Nodes;
using KataAgent.Testing;

namespace KataAgent.Runner.Tests;

/// <summary>
/// start-service without a command and get-apps, as Backend.AI's agent sends them: the runner resolves
/// the service from its service-def dir (runner.json serviceDefsDir, a temp dir here), its built-ins
/// and the python runtime's apps.
/// </summary>
[Collection(RunnerCollection.Name)]
public sealed class ServiceDefinitionTests(PublishedRunner runner)
{
    // A small HTTP server that answers with what it was started with. Written by a write_tempfile
    // prestart action, so its lines are format strings: {ports[0]} and {runtime_path} are filled in,
    // {{ }} is a literal brace. write_tempfile adds no newlines.
    private static readonly string[] ServerBody =
    [
        "import http.server, os, sys\n",
        "TEMPLATED = 'port={ports[0]} runtime={runtime_path} literal={{kept}}'\n",
        "class Handler(http.server.BaseHTTPRequestHandler):\n",
        "    def do_GET(self):\n",
        "        env = lambda name: os.environ.get(name, '-')\n",
        "        lines = [TEMPLATED, 'argv=' + ' '.join(sys.argv[1:]), 'GREETING=' + env('GREETING'), 'SHELL_TEXT=' + env('SHELL_TEXT'),\n",
        "                 'ECHOED=' + env('ECHOED'), 'FORMATTED=' + env('FORMATTED'), 'EXTRA=' + env('EXTRA'), 'cwd=' + os.getcwd()]\n",
        "        body = '\\n'.join(lines).encode()\n",
        "        self.send_response(200)\n",
        "        self.end_headers()\n",
        "        self.wfile.write(body)\n",
        "    def log_message(self, *args):\n",
        "        pass\n",
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), Handler).serve_forever()\n",
    ];

    private static readonly JsonObject WebDefinition = new()
    {
        ["command"] = new JsonArray("{runtime_path}", "{server}", "${{ ports[0] }}"),
        ["url_template"] = "http://{host}:{port}/",
        ["allowed_arguments"] = new JsonArray("--mode"),
        ["allowed_envs"] = new JsonArray("EXTRA", "KATA_TEST_MARKER"),
        ["default_arguments"] = new JsonObject { ["--mode"] = "default", ["--flag"] = null },
        ["env"] = new JsonObject
        {
            ["GREETING"] = "hello on {ports[0]}",
            ["SHELL_TEXT"] = "${HOME}",
            ["ECHOED"] = "{echoed[out]}",
            ["FORMATTED"] = "{formatted[out]}",
        },
        ["prestart"] = new JsonArray(
            new JsonObject { ["action"] = "log", ["args"] = new JsonObject { ["message"] = "preparing web on {ports[0]}" } },
            new JsonObject { ["action"] = "run_command", ["args"] = new JsonObject { ["command"] = new JsonArray("/bin/echo", "echo-{ports[0]}") }, ["ref"] = "echoed" },
            // Python's str()/repr() of a list, a dict and a string, and format specs.
            new JsonObject
            {
                ["action"] = "run_command",
                ["args"] = new JsonObject { ["command"] = new JsonArray("/bin/echo", "{ports!r}|{echoed}|{runtime_path!r}|{ports[0]:>8}|{ports[0]:x}") },
                ["ref"] = "formatted",
            },
            new JsonObject { ["action"] = "write_tempfile", ["args"] = new JsonObject { ["body"] = new JsonArray(ServerBody.Select(line => (JsonNode)line!).ToArray()) }, ["ref"] = "server" }),
    };

    [Fact]
    public async Task A_definition_with_prestart_actions_and_placeholders_starts_from_a_request_without_command()
    {
        await using RunnerHost host = await StartWithDefinitionsAsync(new() { ["web"] = WebDefinition });
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());
        int port = RunnerHost.FreePort();

        JsonElement result = await link.StartServiceAsync(new
        {
            name = "web", port, ports = new[] { port }, protocol = "http",
            options = new { arguments = new Dictionary<string, string> { ["--mode"] = "chosen" }, envs = new Dictionary<string, string> { ["EXTRA"] = "extra-value" } },
        });
        Assert.True(result.GetProperty("status").GetString() == "started", $"{result}\n{host.Log}");

        string body = await GetAsync(port);
        Assert.Contains($"port={port} runtime={PublishedRunner.PythonPath} literal={{kept}}", body);
        // The default --mode was replaced in place by the allowed option; --flag has no value.
        Assert.Contains($"argv={port} --mode chosen --flag\n", body);
        Assert.Contains($"GREETING=hello on {port}\n", body);
        Assert.Contains("SHELL_TEXT=${HOME}\n", body);
        Assert.Contains($"ECHOED=echo-{port}\n", body);
        Assert.Contains($"FORMATTED=[{port}]|{{'out': 'echo-{port}\\n', 'err': ''}}|'{PublishedRunner.PythonPath}'|{port,8}|{port:x}\n", body);
        Assert.Contains("EXTRA=extra-value\n", body);
        Assert.Contains("cwd=" + host.WorkDir, body);
        await Eventually.WaitAsync(() => host.Log.Contains($"preparing web on {port}", StringComparison.Ordinal), "the log prestart action's line in the runner log");

        JsonElement again = await link.StartServiceAsync(new { name = "web", port, ports = new[] { port }, protocol = "http" });
        Assert.Equal("running", again.GetProperty("status").GetString());

        link.Send("shutdown-service", JsonSerializer.Serialize("web"));
        await Eventually.WaitAsync(async () => !await AcceptsAsync(port), $"port {port} to close after shutdown-service", cancellationToken: RunnerTestHelpers.Limit());
        JsonElement restarted = await link.StartServiceAsync(new { name = "web", port, ports = new[] { port }, protocol = "http" });
        Assert.True(restarted.GetProperty("status").GetString() == "started", restarted.ToString());
        Assert.Contains("argv=" + port + " --mode default --flag\n", await GetAsync(port));
    }

    [Fact]
    public async Task A_string_command_runs_in_bash_with_its_placeholders_filled()
    {
        await using RunnerHost host = await StartWithDefinitionsAsync(new()
        {
            ["shelled"] = new JsonObject { ["command"] = "echo \"$0 ${HOME:+home-set}\" > shell.txt; exec {runtime_path} -m http.server --bind 127.0.0.1 ${{ ports[0] }}" },
        });
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());
        int port = RunnerHost.FreePort();

        JsonElement result = await link.StartServiceAsync(new { name = "shelled", port, ports = new[] { port }, protocol = "http" });
        Assert.True(result.GetProperty("status").GetString() == "started", $"{result}\n{host.Log}");
        Assert.Equal("bash home-set\n", File.ReadAllText(Path.Combine(host.WorkDir, "shell.txt")));
        Assert.Contains("shell.txt", await GetAsync(port));
    }

    [Fact]
    public async Task Get_apps_lists_the_definitions_and_filters_by_name()
    {
        await using RunnerHost host = await StartWithDefinitionsAsync(new()
        {
            ["web"] = WebDefinition,
            ["quiet"] = new JsonObject { ["command"] = "true", ["noop"] = true },
        }, rawFiles: new() { ["broken.json"] = "{ not json" });
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());

        JsonElement all = await link.GetAppsAsync("");
        Assert.Equal("done", all.GetProperty("status").GetString());
        JsonElement[] apps = [.. all.GetProperty("data").EnumerateArray()];
        Assert.Equal(["quiet", "web"], apps.Select(app => app.GetProperty("name").GetString()));
        Assert.Equal("""{"name":"quiet"}""", apps[0].GetRawText());
        Assert.Equal("http://{host}:{port}/", apps[1].GetProperty("url_template").GetString());
        Assert.Equal(["--mode"], apps[1].GetProperty("allowed_arguments").EnumerateArray().Select(item => item.GetString()));
        Assert.Equal(["EXTRA", "KATA_TEST_MARKER"], apps[1].GetProperty("allowed_envs").EnumerateArray().Select(item => item.GetString()));
        await Eventually.WaitAsync(() => host.Log.Contains("broken.json", StringComparison.Ordinal), "the runner to log the skipped broken.json");

        JsonElement one = await link.GetAppsAsync("web");
        Assert.Equal("web", Assert.Single(one.GetProperty("data").EnumerateArray()).GetProperty("name").GetString());
        Assert.Empty((await link.GetAppsAsync("nothing-like-this")).GetProperty("data").EnumerateArray());

        // A noop definition starts nothing and answers started.
        JsonElement quiet = await link.StartServiceAsync(new { name = "quiet", port = RunnerHost.FreePort(), protocol = "tcp" });
        Assert.Equal("started", quiet.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Arguments_and_envs_outside_the_allowed_lists_are_refused()
    {
        await using RunnerHost host = await StartWithDefinitionsAsync(new() { ["web"] = WebDefinition });
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());
        int port = RunnerHost.FreePort();

        JsonElement argument = await link.StartServiceAsync(new { name = "web", port, ports = new[] { port }, protocol = "http", options = new { arguments = new { __evil = "x" } } });
        AssertFailed(argument, "Argument __evil not allowed for service web");
        JsonElement environment = await link.StartServiceAsync(new { name = "web", port, ports = new[] { port }, protocol = "http", options = new { envs = new { LD_PRELOAD = "x" } } });
        AssertFailed(environment, "Environment variable LD_PRELOAD not allowed for service web");
        // Allowed, but set by the session (environ.txt): the session's value stands.
        JsonElement frozen = await link.StartServiceAsync(new { name = "web", port, ports = new[] { port }, protocol = "http", options = new { envs = new { KATA_TEST_MARKER = "x" } } });
        AssertFailed(frozen, "Environment variable KATA_TEST_MARKER can't be overwritten");
        Assert.False(await AcceptsAsync(port));

        JsonElement allowed = await link.StartServiceAsync(new { name = "web", port, ports = new[] { port }, protocol = "http", options = new { envs = new { EXTRA = "fine" } } });
        Assert.True(allowed.GetProperty("status").GetString() == "started", allowed.ToString());
        Assert.Contains("EXTRA=fine\n", await GetAsync(port));
    }

    [Fact]
    public async Task Unknown_preopen_and_pty_services_answer_as_backend_ai_does()
    {
        await using RunnerHost host = await StartWithDefinitionsAsync([]);
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());
        int port = RunnerHost.FreePort();

        AssertFailed(await link.StartServiceAsync(new { name = "no-such-app", port, ports = new[] { port }, protocol = "http", options = new { } }),
            "unsupported service: no-such-app");
        // A name that is not a file name is never looked up outside the service-def dir.
        AssertFailed(await link.StartServiceAsync(new { name = "../config/runner", port, protocol = "http" }), "unsupported service: ../config/runner");

        JsonElement preopen = await link.StartServiceAsync(new { name = "no-such-app", port, ports = new[] { port }, protocol = "preopen", options = new { } });
        Assert.Equal("started", preopen.GetProperty("status").GetString());
        Assert.False(await AcceptsAsync(port));

        JsonElement pty = await link.StartServiceAsync(new { name = "terminal", port, ports = new[] { port }, protocol = "pty" });
        Assert.Equal("failed", pty.GetProperty("status").GetString());

        // KataAgent's extension: a request with a command runs it, whatever the protocol.
        JsonElement explicitPreopen = await link.StartServiceAsync(new
        {
            name = "explicit", port, protocol = "preopen", command = new[] { PublishedRunner.PythonPath, "-m", "http.server", "--bind", "127.0.0.1", "{port}" },
        });
        Assert.True(explicitPreopen.GetProperty("status").GetString() == "started", explicitPreopen.ToString());
        Assert.True(await AcceptsAsync(port));
    }

    [Fact]
    public async Task A_malformed_definition_fails_naming_the_file_and_the_problem()
    {
        await using RunnerHost host = await StartWithDefinitionsAsync(new()
        {
            ["typo"] = new JsonObject { ["command"] = new JsonArray("/bin/true"), ["allowed_argument"] = new JsonArray("--x") },
            ["nocommand"] = new JsonObject { ["url_template"] = "http://{host}:{port}/" },
            ["badref"] = new JsonObject { ["command"] = new JsonArray("{runtime_path}", "-m", "http.server", "{nope}") },
            ["badaction"] = new JsonObject
            {
                ["command"] = new JsonArray("/bin/true"),
                ["prestart_actions"] = new JsonArray(new JsonObject { ["action"] = "download", ["args"] = new JsonObject() }),
            },
        }, rawFiles: new() { ["broken.json"] = "{\"command\": [\"/bin/true\"" });
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());

        async Task<JsonElement> Start(string name) => await link.StartServiceAsync(new { name, port = RunnerHost.FreePort(), protocol = "tcp" });
        AssertFailed(await Start("broken"), "malformed JSON in service-def file broken.json");
        AssertFailed(await Start("typo"), "service-def file typo.json: unknown field 'allowed_argument'");
        AssertFailed(await Start("nocommand"), "service-def file nocommand.json: 'command' is missing");
        AssertFailed(await Start("badref"), "service-def badref.json: unknown variable 'nope' in {nope}");
        AssertFailed(await Start("badaction"), "service-def badaction.json: invalid action: download");
    }

    [Fact]
    public async Task The_python_runtime_starts_jupyter_with_backend_ai_command_line_when_the_module_is_installed()
    {
        // A stand-in "notebook" module on PYTHONPATH: it reads the --config file the runner wrote (a
        // traitlets-style "c.NotebookApp.port = N" script) and serves what it was given on that port.
        await using RunnerHost host = await RunnerHost.StartAsync(runner, prepared =>
        {
            string modules = Directory.CreateDirectory(Path.Combine(prepared.Root, "modules", "notebook")).FullName;
            File.WriteAllText(Path.Combine(modules, "__init__.py"), "");
            File.WriteAllText(Path.Combine(modules, "__main__.py"), """
                import http.server, sys, types
                class Section(types.SimpleNamespace): pass
                class Config:
                    def __getattr__(self, name):
                        section = Section()
                        setattr(self, name, section)
                        return section
                c = Config()
                config_path = sys.argv[sys.argv.index('--config') + 1]
                exec(open(config_path).read(), {'c': c})
                app = c.NotebookApp
                answer = ('argv=' + ' '.join(sys.argv[1:]) + '\nport=%d ip=%s token=%r root=%s server_port=%d\n'
                          % (app.port, app.ip, app.token, app.allow_root, c.ServerApp.port)).encode()
                class Handler(http.server.BaseHTTPRequestHandler):
                    def do_GET(self):
                        self.send_response(200)
                        self.end_headers()
                        self.wfile.write(answer)
                    def log_message(self, *args):
                        pass
                http.server.HTTPServer(('127.0.0.1', app.port), Handler).serve_forever()
                """);
            File.AppendAllText(Path.Combine(prepared.ConfigDir, "environ.txt"), $"PYTHONPATH={Path.GetDirectoryName(modules)}\n");
        });
        using RawRunnerLink link = await RawRunnerLink.TakeOverAsync(host, RunnerTestHelpers.Limit());
        int port = RunnerHost.FreePort();

        JsonElement result = await link.StartServiceAsync(new { name = "jupyter", port, ports = new[] { port }, protocol = "http", options = new { } });
        Assert.True(result.GetProperty("status").GetString() == "started", $"{result}\n{host.Log}");
        string body = await GetAsync(port);
        Assert.Contains("argv=--no-browser --config ", body);
        Assert.Contains($"port={port} ip=127.0.0.1 token='' root=True server_port={port}", body);

        if (!PythonHasModule("jupyterlab"))
        {
            AssertFailed(await link.StartServiceAsync(new { name = "jupyterlab", port = RunnerHost.FreePort(), protocol = "http" }), "unsupported service: jupyterlab");
        }
    }

    internal static async Task<RunnerHost> StartWithDefinitionsAsync(PublishedRunner runner, Dictionary<string, JsonObject> definitions,
        Dictionary<string, string>? rawFiles = null) =>
        await RunnerHost.StartAsync(runner, prepared =>
        {
            string directory = Directory.CreateDirectory(Path.Combine(prepared.Root, "service-defs")).FullName;
            foreach ((string name, JsonObject definition) in definitions)
            {
                File.WriteAllText(Path.Combine(directory, name + ".json"), definition.ToJsonString());
            }
            foreach ((string fileName, string text) in rawFiles ?? [])
            {
                File.WriteAllText(Path.Combine(directory, fileName), text);
            }
            SetRunnerSetting(prepared, "serviceDefsDir", directory);
        });

    private Task<RunnerHost> StartWithDefinitionsAsync(Dictionary<string, JsonObject> definitions, Dictionary<string, string>? rawFiles = null) =>
        StartWithDefinitionsAsync(runner, definitions, rawFiles);

    /// <summary>Adds a field to the runner.json that RunnerHost wrote.</summary>
    internal static void SetRunnerSetting(RunnerHost host, string name, string value)
    {
        string path = Path.Combine(host.ConfigDir, "runner.json");
        JsonObject settings = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        settings[name] = value;
        File.WriteAllText(path, settings.ToJsonString());
    }

    internal static void AssertFailed(JsonElement result, string expectedError)
    {
        Assert.True(result.GetProperty("status").GetString() == "failed", result.ToString());
        Assert.Contains(expectedError, result.GetProperty("error").GetString());
    }

    internal static async Task<string> GetAsync(int port)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
        return await http.GetStringAsync(new Uri($"http://127.0.0.1:{port}/"));
    }

    internal static async Task<bool> AcceptsAsync(int port)
    {
        using var client = new System.Net.Sockets.TcpClient();
        try
        {
            await client.ConnectAsync("127.0.0.1", port);
            return true;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return false;
        }
    }

    private static bool PythonHasModule(string module)
    {
        using var process = System.Diagnostics.Process.Start(PublishedRunner.PythonPath,
            ["-c", "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 1)", module]);
        process.WaitForExit();
        return process.ExitCode == 0;
    }
}
