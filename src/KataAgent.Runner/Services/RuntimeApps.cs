using System.Globalization;

namespace KataAgent.Runner.Services;

/// <summary>
/// The apps the python runtime brings, started with the runtime's interpreter as Backend.AI's python
/// runner does: jupyter (the notebook module), jupyterlab, ipython and tensorboard. Each exists only
/// when its module is importable by that interpreter.
/// </summary>
internal sealed class RuntimeApps(RunnerConfig config, Func<string> stateDirectory)
{
    private static readonly Dictionary<string, string> ModuleOfApp = new(StringComparer.Ordinal)
    {
        ["jupyter"] = "notebook",
        ["jupyterlab"] = "jupyterlab",
        ["ipython"] = "IPython",
        ["tensorboard"] = "tensorboard",
    };

    /// <summary>The launch for a runtime app, or null when the runtime is not python, or the app is unknown or not installed.</summary>
    public async Task<ServiceLaunch?> ResolveAsync(ServiceRequest request, CancellationToken stopping)
    {
        if (!config.HasInterpreter || !ModuleOfApp.TryGetValue(request.Name, out string? module) || !await IsInstalledAsync(module, stopping))
        {
            return null;
        }
        int port = request.PrimaryPort ?? throw new ServiceStartException($"{request.Name}: no port given");
        string portText = port.ToString(CultureInfo.InvariantCulture);
        string address = BuiltInServices.ListenAddress(config);
        List<string> argv = request.Name switch
        {
            "jupyter" or "jupyterlab" => [config.RuntimePath, "-m", module, "--no-browser", "--config", await WriteJupyterConfigAsync(address, portText, stopping)],
            "ipython" => [config.RuntimePath, "-m", "IPython"],
            _ => TensorBoard(address, portText),
        };
        return new ServiceLaunch
        {
            Source = $"{request.Name} of the python runtime ({config.RuntimePath} -m {module})",
            Argv = argv,
            ReadinessPorts = [port],
            StartTimeout = ServiceLaunch.AppStartTimeout,
        };
    }

    private List<string> TensorBoard(string address, string port)
    {
        string logs = Path.Combine(config.WorkDir, "logs");
        Directory.CreateDirectory(logs);
        return [config.RuntimePath, "-m", "tensorboard.main", "--logdir", logs, "--host", address, "--port", port, "--debugger_port", "6064"];
    }

    /// <summary>
    /// Backend.AI's settings (no token, root allowed, the given port, no trash, websocket pings), as
    /// NotebookApp options for the classic notebook and as ServerApp options for jupyter_server
    /// (Notebook 7, JupyterLab 3+), which ignores the NotebookApp ones.
    /// </summary>
    private async Task<string> WriteJupyterConfigAsync(string address, string port, CancellationToken stopping)
    {
        var lines = new List<string>();
        foreach (string application in new[] { "NotebookApp", "ServerApp" })
        {
            lines.Add($"c.{application}.allow_root = True");
            lines.Add($"c.{application}.ip = \"{address}\"");
            lines.Add($"c.{application}.port = {port}");
            lines.Add($"c.{application}.token = \"\"");
            lines.Add($"c.{application}.tornado_settings = {{'ws_ping_interval': 10000}}");
        }
        lines.Add("c.IdentityProvider.token = \"\"");
        lines.Add("c.FileContentsManager.delete_to_trash = False");
        string path = Path.Combine(stateDirectory(), $"jupyter-config-{Guid.NewGuid():N}.py");
        await File.WriteAllLinesAsync(path, lines, stopping);
        return path;
    }

    private async Task<bool> IsInstalledAsync(string module, CancellationToken stopping)
    {
        try
        {
            HelperCommand.Outcome outcome = await HelperCommand.RunAsync(
                [config.RuntimePath, "-c", "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec(sys.argv[1]) else 1)", module],
                config.ChildEnvironment, config.WorkDir, TimeSpan.FromSeconds(60), stopping);
            return outcome.ExitCode == 0;
        }
        catch (Exception exception) when (exception is IOException or TimeoutException)
        {
            Log.Warn($"cannot check whether {config.RuntimePath} has {module}: {exception.Message}");
            return false;
        }
    }
}
