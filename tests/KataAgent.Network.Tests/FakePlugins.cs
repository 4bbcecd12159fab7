using System.Diagnostics;

namespace KataAgent.Network.Tests;

/// <summary>Shell-script CNI plugins for failure tests, in a directory searched before /usr/lib/cni.</summary>
internal static class FakePlugins
{
    /// <summary>Records its stdin and environment per command under LOGDIR, then behaves per its body.</summary>
    public static async Task<string> WriteAsync(string directory, string type, string body)
    {
        Directory.CreateDirectory(directory);
        string log = Path.Combine(directory, "log");
        Directory.CreateDirectory(log);
        string path = Path.Combine(directory, type);
        string script = $$"""
            #!/bin/sh
            LOG={{log}}
            n=$(ls "$LOG" | wc -l)
            cat > "$LOG/$n-{{type}}-$CNI_COMMAND-$CNI_CONTAINERID.json"
            env | grep '^CNI_' | sort > "$LOG/$n-{{type}}-$CNI_COMMAND-$CNI_CONTAINERID.env"
            if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}'; exit 0; fi
            {{body}}
            """;
        await File.WriteAllTextAsync(path, script.Replace("\r", ""));
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        await WaitUntilExecutableAsync(path);
        return path;
    }

    /// <summary>
    /// A process forked by another thread while the script was open for writing holds the write descriptor
    /// until it execs, and exec of the script then fails with ETXTBSY; run it until that window has passed.
    /// </summary>
    private static async Task WaitUntilExecutableAsync(string path)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                var startInfo = new ProcessStartInfo(path) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardInput = true };
                startInfo.Environment["CNI_COMMAND"] = "VERSION";
                using var process = Process.Start(startInfo)!;
                process.StandardInput.Close();
                await process.StandardOutput.ReadToEndAsync();
                await process.WaitForExitAsync();
                // The probe's own log entries would confuse the tests that read the log.
                foreach (string f in Directory.EnumerateFiles(Path.Combine(Path.GetDirectoryName(path)!, "log"), "*-VERSION-*"))
                    File.Delete(f);
                return;
            }
            catch (System.ComponentModel.Win32Exception) when (attempt < 50)
            {
                await Task.Delay(100);
            }
        }
    }

    public static IReadOnlyList<string> LogEntries(string directory) =>
        Directory.Exists(Path.Combine(directory, "log"))
            ? Directory.EnumerateFiles(Path.Combine(directory, "log")).Select(Path.GetFileName).OfType<string>()
                .OrderBy(n => int.Parse(n.Split('-')[0])).ToList()
            : [];
}
