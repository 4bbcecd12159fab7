using System.Diagnostics;
using System.Text.Json.Nodes;

namespace KataAgent.Network.Tests;

/// <summary>The CNI protocol as seen by plugins (fake ones here): environment, stdin, chaining, results and errors.</summary>
public sealed class CniClientTests : IDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "ka-cnitest-" + Guid.NewGuid().ToString("N")[..12]);
    private readonly CniRuntimeConfig _runtime = new("ctr-1", "/var/run/netns/does-not-matter", "eth7")
    {
        CapabilityArgs = new Dictionary<string, JsonNode?>
        {
            ["portMappings"] = new JsonArray(new JsonObject { ["hostPort"] = 41999, ["containerPort"] = 2000, ["protocol"] = "tcp" }),
        },
    };

    public void Dispose()
    {
        if (Directory.Exists(_directory))
            Directory.Delete(_directory, recursive: true);
    }

    private const string ResultFromEnv =
        """printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"address":"10.9.8.7/24","gateway":"10.9.8.1","interface":0}],"routes":[{"dst":"0.0.0.0/0"}]}' "$CNI_IFNAME" "$CNI_NETNS" """;

    private CniClient Client(TimeSpan? timeout = null) => new(new CniPluginInvoker([_directory, "/usr/lib/cni"], timeout ?? TimeSpan.FromSeconds(60)));

    private static JsonObject List(params JsonObject[] plugins) => new()
    {
        ["cniVersion"] = "1.0.0",
        ["name"] = "kt-list",
        ["plugins"] = new JsonArray(plugins),
    };

    private JsonObject Logged(int index) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(_directory, "log", FakePlugins.LogEntries(_directory).Where(n => n.EndsWith(".json", StringComparison.Ordinal)).ElementAt(index))))!.AsObject();

    [SkippableFact]
    public async Task Add_passes_the_attachment_in_the_environment_and_chains_results()
    {
        Host.RequireRoot();
        await FakePlugins.WriteAsync(_directory, "kt-first", $"if [ \"$CNI_COMMAND\" = ADD ]; then {ResultFromEnv}; fi");
        // The second adds an address to whatever it received, as a chained plugin may.
        await FakePlugins.WriteAsync(_directory, "kt-second",
            """if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth7","sandbox":"/x"}],"ips":[{"address":"10.9.8.7/24","interface":0},{"address":"10.9.9.9/16","interface":0}]}'; fi""");
        var list = List(
            new JsonObject { ["type"] = "kt-first", ["custom"] = 42 },
            new JsonObject { ["type"] = "kt-second", ["capabilities"] = new JsonObject { ["portMappings"] = true, ["bandwidth"] = true } });
        var reported = new List<JsonObject>();

        var result = await Client().AddAsync(list, _runtime, reported.Add);

        Assert.Equal(2, reported.Count);
        Assert.Equal(["10.9.8.7/24", "10.9.9.9/16"], result.Ips.Select(i => i.Address));
        Assert.Equal("10.9.9.9", result.Ips[1].Ip.ToString());
        Assert.Equal(16, result.Ips[1].PrefixLength);

        var first = Logged(0);
        Assert.Equal("kt-list", (string?)first["name"]);
        Assert.Equal("1.0.0", (string?)first["cniVersion"]);
        Assert.Equal(42, (int?)first["custom"]);
        Assert.Null(first["prevResult"]);
        Assert.Null(first["runtimeConfig"]); // kt-first declares no capabilities
        string env = File.ReadAllText(Path.Combine(_directory, "log", FakePlugins.LogEntries(_directory).First(n => n.EndsWith(".env", StringComparison.Ordinal))));
        Assert.Contains("CNI_COMMAND=ADD\n", env);
        Assert.Contains("CNI_CONTAINERID=ctr-1\n", env);
        Assert.Contains("CNI_IFNAME=eth7\n", env);
        Assert.Contains("CNI_NETNS=/var/run/netns/does-not-matter\n", env);
        Assert.Contains($"CNI_PATH={_directory}:/usr/lib/cni\n", env);

        var second = Logged(1);
        Assert.Equal("10.9.8.7/24", (string?)second["prevResult"]!["ips"]![0]!["address"]);
        Assert.Equal("eth7", (string?)second["prevResult"]!["interfaces"]![0]!["name"]);
        // Only declared capabilities with a value are passed: portMappings yes, bandwidth has no argument.
        var runtimeConfig = second["runtimeConfig"]!.AsObject();
        Assert.Equal(["portMappings"], runtimeConfig.Select(p => p.Key));
        Assert.Equal(41999, (int?)runtimeConfig["portMappings"]![0]!["hostPort"]);
    }

    [SkippableFact]
    public async Task Del_runs_in_reverse_with_the_final_result_and_tries_every_plugin()
    {
        Host.RequireRoot();
        await FakePlugins.WriteAsync(_directory, "kt-a", "exit 0");
        await FakePlugins.WriteAsync(_directory, "kt-b", """echo '{"cniVersion":"1.0.0","code":11,"msg":"b is stuck"}'; exit 1""");
        await FakePlugins.WriteAsync(_directory, "kt-c", "exit 0");
        var list = List(new JsonObject { ["type"] = "kt-a" }, new JsonObject { ["type"] = "kt-b" }, new JsonObject { ["type"] = "kt-c" });
        var final = JsonNode.Parse("""{"cniVersion":"1.0.0","ips":[{"address":"10.9.8.7/24"}]}""")!.AsObject();

        var e = await Assert.ThrowsAsync<CniPluginException>(() => Client().DeleteAsync(list, _runtime, final));

        Assert.Equal("kt-b", e.Plugin);
        Assert.Equal(CniCommand.Del, e.Command);
        Assert.Equal(11, e.Code);
        var order = FakePlugins.LogEntries(_directory).Where(n => n.EndsWith(".json", StringComparison.Ordinal)).Select(n => n.Split('-')[2]).ToList();
        Assert.Equal(["c", "b", "a"], order);
        for (int i = 0; i < 3; i++)
            Assert.Equal("10.9.8.7/24", (string?)Logged(i)["prevResult"]!["ips"]![0]!["address"]);
    }

    [SkippableFact]
    public async Task Several_del_failures_are_reported_together()
    {
        Host.RequireRoot();
        await FakePlugins.WriteAsync(_directory, "kt-x", """echo '{"cniVersion":"1.0.0","code":5,"msg":"x broke"}'; exit 1""");
        await FakePlugins.WriteAsync(_directory, "kt-y", """echo 'not json' >&2; exit 3""");
        var e = await Assert.ThrowsAsync<CniException>(() =>
            Client().DeleteAsync(List(new JsonObject { ["type"] = "kt-x" }, new JsonObject { ["type"] = "kt-y" }), _runtime, null));
        Assert.Contains("2 plugins", e.Message);
        Assert.Contains("x broke", e.Message);
        Assert.Contains("not json", e.Message);
        Assert.Equal(2, ((AggregateException)e.InnerException!).InnerExceptions.Count);
    }

    [SkippableFact]
    public async Task A_failure_without_an_error_object_reports_exit_status_and_stderr()
    {
        Host.RequireRoot();
        await FakePlugins.WriteAsync(_directory, "kt-crash", """echo 'panic: something odd' >&2; exit 2""");
        var e = await Assert.ThrowsAsync<CniPluginException>(() => Client().AddAsync(List(new JsonObject { ["type"] = "kt-crash" }), _runtime));
        Assert.Equal(2, e.ExitCode);
        Assert.Null(e.Code);
        Assert.Contains("kt-crash", e.Message);
        Assert.Contains("ctr-1", e.Message);
        Assert.Contains("panic: something odd", e.Message);
    }

    [SkippableFact]
    public async Task Malformed_or_missing_results_are_refused()
    {
        Host.RequireRoot();
        await FakePlugins.WriteAsync(_directory, "kt-garbage", "echo '{not json'");
        await FakePlugins.WriteAsync(_directory, "kt-silent", "exit 0");
        await FakePlugins.WriteAsync(_directory, "kt-badip", """echo '{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.300/24"}]}'""");
        var garbage = await Assert.ThrowsAsync<CniPluginException>(() => Client().AddAsync(List(new JsonObject { ["type"] = "kt-garbage" }), _runtime));
        Assert.Contains("invalid JSON", garbage.Message);
        var silent = await Assert.ThrowsAsync<CniPluginException>(() => Client().AddAsync(List(new JsonObject { ["type"] = "kt-silent" }), _runtime));
        Assert.Contains("no result", silent.Message);
        var badIp = await Assert.ThrowsAsync<CniException>(() => Client().AddAsync(List(new JsonObject { ["type"] = "kt-badip" }), _runtime));
        Assert.Contains("10.1.2.300/24", badIp.Message);
    }

    [SkippableFact]
    public async Task A_plugin_that_ignores_stdin_still_works()
    {
        Host.RequireRoot();
        // The script body runs after the logging cat; this one closes stdin unread by exec'ing a reader-less printf.
        Directory.CreateDirectory(_directory);
        string path = Path.Combine(_directory, "kt-deaf");
        await File.WriteAllTextAsync(path, "#!/bin/sh\nexec 0<&-\n" + ResultFromEnv + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var big = new JsonObject { ["type"] = "kt-deaf", ["padding"] = new string('x', 1 << 20) };
        CniResult? result = null;
        for (int attempt = 0; result is null; attempt++)
        {
            try
            {
                result = await Client().AddAsync(List(big), _runtime);
            }
            catch (CniPluginException e) when (e.InnerException is System.ComponentModel.Win32Exception && attempt < 50)
            {
                await Task.Delay(100); // ETXTBSY right after writing the script; see FakePlugins
            }
        }
        Assert.Equal("eth7", result.Interfaces[0].Name);
    }

    [SkippableFact]
    public async Task A_hanging_plugin_and_its_children_are_killed_at_the_timeout()
    {
        Host.RequireRoot();
        await FakePlugins.WriteAsync(_directory, "kt-hang", "sleep 7773; echo done");
        var stopwatch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<CniPluginException>(() => Client(TimeSpan.FromSeconds(2)).AddAsync(List(new JsonObject { ["type"] = "kt-hang" }), _runtime));
        Assert.True(e.TimedOut);
        Assert.Contains("timed out after 2 s", e.Message);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(60), $"took {stopwatch.Elapsed}");
        Assert.Empty(await Host.ProcessesStillRunningAsync("sleep", "7773"));
    }

    [SkippableFact]
    public async Task Cancellation_kills_the_plugin_and_surfaces_as_cancellation()
    {
        Host.RequireRoot();
        await FakePlugins.WriteAsync(_directory, "kt-hang", "sleep 7774");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Client().AddAsync(List(new JsonObject { ["type"] = "kt-hang" }), _runtime, cancellationToken: cts.Token));
        Assert.Empty(await Host.ProcessesStillRunningAsync("sleep", "7774"));
    }

    [SkippableFact]
    public async Task Check_runs_in_order_with_the_result_and_honours_skips_and_disableCheck()
    {
        Host.RequireRoot();
        await FakePlugins.WriteAsync(_directory, "kt-a", "exit 0");
        await FakePlugins.WriteAsync(_directory, "kt-b", """echo '{"cniVersion":"1.0.0","code":99,"msg":"b check failed"}'; exit 1""");
        var final = JsonNode.Parse("""{"cniVersion":"1.0.0","ips":[]}""")!.AsObject();
        var list = List(new JsonObject { ["type"] = "kt-a" }, new JsonObject { ["type"] = "kt-b" });

        var e = await Assert.ThrowsAsync<CniPluginException>(() => Client().CheckAsync(list, _runtime, final));
        Assert.Equal("kt-b", e.Plugin);
        Assert.NotNull(Logged(0)["prevResult"]);

        await Client().CheckAsync(list, _runtime, final, skipTypes: ["kt-b"]);
        list["disableCheck"] = true;
        await Client().CheckAsync(list, _runtime, final);
    }

    [Fact]
    public async Task Unknown_plugins_and_bad_lists_are_named()
    {
        var client = new CniClient(new CniPluginInvoker([_directory]));
        var missing = await Assert.ThrowsAsync<CniPluginNotFoundException>(() => client.AddAsync(List(new JsonObject { ["type"] = "kt-nope" }), _runtime));
        Assert.Contains(_directory, missing.Message);
        await Assert.ThrowsAsync<CniException>(() => client.AddAsync(List(new JsonObject { ["type"] = "../bin/sh" }), _runtime));
        await Assert.ThrowsAsync<CniException>(() => client.AddAsync(List(), _runtime));
        await Assert.ThrowsAsync<CniException>(() => client.AddAsync(new JsonObject { ["cniVersion"] = "1.0.0", ["plugins"] = new JsonArray() }, _runtime));
        await Assert.ThrowsAsync<CniException>(() => client.AddAsync(List(new JsonObject { ["notype"] = 1 }), _runtime));
    }

    [SkippableFact]
    public async Task The_installed_plugins_speak_cni_1_0()
    {
        Host.RequireTools();
        var invoker = new CniPluginInvoker();
        foreach (string type in new[] { "bridge", "host-local", "portmap", "firewall" })
        {
            var version = await invoker.InvokeAsync(CniCommand.Version, type, new JsonObject { ["cniVersion"] = "1.0.0" }, new CniRuntimeConfig("", "", ""));
            Assert.Contains("1.0.0", version!["supportedVersions"]!.AsArray().Select(v => (string?)v));
        }
    }
}
