using System.Globalization;
using KataAgent.Runner.Native;

namespace KataAgent.Runner.Services;

/// <summary>
/// The services the runner brings itself, as Backend.AI's runner does: <c>sshd</c> (dropbear, else
/// OpenSSH's sshd) and <c>ttyd</c> (a web terminal, in tmux when there is one). Each exists only when
/// its program is installed in the image (PATH, the sbin dirs, or Backend.AI's /opt/kernel).
/// </summary>
internal sealed class BuiltInServices(RunnerConfig config, Func<string> stateDirectory)
{
    private static readonly string[] ExtraDirectories = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/opt/kernel"];

    private string? _dropbearHostKey;
    private string? _openSshConfigDir;

    /// <summary>The launch for a built-in service, or null when <paramref name="request"/> names none that is installed.</summary>
    /// <exception cref="ServiceStartException">the service exists but cannot be prepared (e.g. host-key generation failed).</exception>
    public async Task<ServiceLaunch?> ResolveAsync(ServiceRequest request, CancellationToken stopping) => request.Name switch
    {
        "ttyd" => Ttyd(request),
        "sshd" => await SshdAsync(request, stopping),
        _ => null,
    };

    /// <summary>The address services listen on: the runner's bind host ("*" is every IPv4 address, as in Backend.AI).</summary>
    public static string ListenAddress(RunnerConfig config) => config.BindHost is "*" or "" ? "0.0.0.0" : config.BindHost;

    private string? Find(string name) => HelperCommand.FindExecutable(name, config.ChildEnvironment, ExtraDirectories);

    private ServiceLaunch? Ttyd(ServiceRequest request)
    {
        string? ttyd = Find("ttyd");
        if (ttyd is null)
        {
            return null;
        }
        int port = RequirePort(request);
        // Backend.AI's choice of login shell: zsh, bash, ash, sh, whichever exists first.
        string shell = new[] { "zsh", "bash", "ash" }.FirstOrDefault(candidate => File.Exists($"/bin/{candidate}")) ?? "sh";
        var argv = new List<string> { ttyd, "-W", "-p", port.ToString(CultureInfo.InvariantCulture) };
        if (config.BindHost is not ("*" or ""))
        {
            argv.AddRange(["-i", config.BindHost]);
        }
        argv.Add($"/bin/{shell}");
        string? tmux = Find("tmux");
        if (tmux is not null && shell != "ash")
        {
            // Every browser tab joins the same tmux session (created by the first one).
            argv.AddRange(["-c", $"export SHELL=/bin/{shell}; exec {tmux} -2 new-session -A -s main"]);
        }
        return new ServiceLaunch
        {
            Source = $"built-in ttyd ({ttyd})",
            Argv = argv,
            ReadinessPorts = [port],
            StartTimeout = ServiceLaunch.BuiltInStartTimeout,
        };
    }

    private async Task<ServiceLaunch?> SshdAsync(ServiceRequest request, CancellationToken stopping)
    {
        string? dropbearMulti = Find("dropbearmulti");
        string? dropbear = dropbearMulti ?? Find("dropbear");
        string? dropbearKey = dropbearMulti ?? Find("dropbearkey");
        if (dropbear is not null && dropbearKey is not null)
        {
            return await DropbearAsync(request, dropbear, dropbearKey, dropbearMulti is not null, stopping);
        }
        string? sshd = Find("sshd");
        string? keygen = Find("ssh-keygen");
        if (sshd is not null && keygen is not null)
        {
            return await OpenSshAsync(request, sshd, keygen, stopping);
        }
        return null;
    }

    private async Task<ServiceLaunch> DropbearAsync(ServiceRequest request, string dropbear, string dropbearKey, bool multi, CancellationToken stopping)
    {
        int port = RequirePort(request);
        string directory = stateDirectory();
        if (_dropbearHostKey is null)
        {
            string keyPath = Path.Combine(directory, "dropbear_host_key");
            // ed25519 is quick to make; dropbear older than 2020.79 knows only rsa and friends.
            HelperCommand.Outcome outcome = await RunKeyTool([.. MultiCall(dropbearKey, "dropbearkey", multi), "-t", "ed25519", "-f", keyPath], stopping);
            if (outcome.ExitCode != 0)
            {
                outcome = await RunKeyTool([.. MultiCall(dropbearKey, "dropbearkey", multi), "-t", "rsa", "-s", "2048", "-f", keyPath], stopping);
            }
            if (outcome.ExitCode != 0)
            {
                throw new ServiceStartException($"sshd: dropbearkey failed ({outcome.ExitCode}): {outcome.Stderr.Trim()}");
            }
            _dropbearHostKey = keyPath;
        }
        var argv = new List<string>(MultiCall(dropbear, "dropbear", multi))
        {
            "-r", _dropbearHostKey,
            "-E",               // log to stderr
            "-F",               // foreground
            "-g", "-w",         // no password logins for root, no root logins
            "-K", "15",         // keepalive interval
            "-I", "0",          // no idle timeout
            "-P", Path.Combine(directory, "dropbear.pid"),
        };
        foreach (int listenPort in request.Ports)
        {
            argv.AddRange(["-p", $"{ListenAddress(config)}:{listenPort}"]);
        }
        return new ServiceLaunch
        {
            Source = $"built-in sshd ({dropbear})",
            Argv = argv,
            ReadinessPorts = [port],
            StartTimeout = ServiceLaunch.BuiltInStartTimeout,
        };
    }

    private async Task<ServiceLaunch> OpenSshAsync(ServiceRequest request, string sshd, string keygen, CancellationToken stopping)
    {
        int port = RequirePort(request);
        if (_openSshConfigDir is null)
        {
            string directory = stateDirectory();
            string keyPath = Path.Combine(directory, "ssh_host_ed25519_key");
            HelperCommand.Outcome outcome = await RunKeyTool([keygen, "-q", "-t", "ed25519", "-N", "", "-f", keyPath], stopping);
            if (outcome.ExitCode != 0)
            {
                throw new ServiceStartException($"sshd: ssh-keygen failed ({outcome.ExitCode}): {outcome.Stderr.Trim()}");
            }
            if (Libc.getuid() == 0 && !Directory.Exists("/run/sshd"))
            {
                // OpenSSH's privilege-separation dir, required when it runs as root.
                Directory.CreateDirectory("/run/sshd");
            }
            await File.WriteAllTextAsync(Path.Combine(directory, "sshd_config"), string.Join('\n',
                $"HostKey {keyPath}",
                $"PidFile {Path.Combine(directory, "sshd.pid")}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin no",
                "ClientAliveInterval 15",
                "AuthorizedKeysFile .ssh/authorized_keys",
                "Subsystem sftp internal-sftp",
                ""), stopping);
            _openSshConfigDir = directory;
        }
        var argv = new List<string> { sshd, "-D", "-e", "-f", Path.Combine(_openSshConfigDir, "sshd_config") };
        foreach (int listenPort in request.Ports)
        {
            argv.AddRange(["-o", $"ListenAddress={ListenAddress(config)}:{listenPort}"]);
        }
        return new ServiceLaunch
        {
            Source = $"built-in sshd ({sshd})",
            Argv = argv,
            ReadinessPorts = [port],
            StartTimeout = ServiceLaunch.BuiltInStartTimeout,
        };
    }

    private async Task<HelperCommand.Outcome> RunKeyTool(IReadOnlyList<string> argv, CancellationToken stopping)
    {
        try
        {
            return await HelperCommand.RunAsync(argv, config.ChildEnvironment, workingDirectory: null, TimeSpan.FromSeconds(60), stopping);
        }
        catch (Exception exception) when (exception is IOException or TimeoutException)
        {
            throw new ServiceStartException($"sshd: {exception.Message}");
        }
    }

    /// <summary>dropbearmulti takes the program name as its first argument.</summary>
    private static IEnumerable<string> MultiCall(string executable, string program, bool multi) => multi ? [executable, program] : [executable];

    private static int RequirePort(ServiceRequest request) =>
        request.PrimaryPort ?? throw new ServiceStartException($"{request.Name}: no port given");
}
