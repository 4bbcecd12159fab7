using KataAgent.Cli.Commands;
using KataAgent.Cli.Config;
using KataAgent.Core.Runtime;

namespace KataAgent.Cli.Tests;

/// <summary>Doctor's per-class checks, exit bits and help come from the runtime-class table; so do the config's class names.</summary>
public sealed class DoctorRuntimeClassTests
{
    private static readonly Dictionary<string, string> NoEnvironment = new(StringComparer.Ordinal);

    [Theory]
    [InlineData("kata", 1)]
    [InlineData("gvisor", 2)]
    [InlineData("runc", 4)]
    [InlineData("kata-clh", 32)]
    [InlineData("common", DoctorCommand.CommonBit)]
    [InlineData("hardening", DoctorCommand.HardeningBit)]
    public void A_failing_check_sets_its_areas_bit_and_only_that(string area, int bit)
    {
        var checks = new List<DoctorCommand.Check> { new(area, "x", false, "broken"), new("runc", "ok", true, "fine") };
        Assert.Equal(bit, DoctorCommand.ExitCode(checks));
        Assert.Equal(bit != DoctorCommand.CommonBit, DoctorCommand.Usable(bit)["common"]);
        if (RuntimeClassTable.Find(area) is { } d)
            Assert.False(DoctorCommand.Usable(bit)[d.Name]);
    }

    [Fact]
    public void The_class_bits_are_the_tables_and_clear_of_doctors_own()
    {
        var bits = RuntimeClassTable.All.Select(d => d.DoctorExitBit).Append(DoctorCommand.CommonBit).Append(DoctorCommand.HardeningBit)
            .Append(DoctorCommand.BackendAiBit).ToList();
        Assert.Equal(bits.Count, bits.Distinct().Count());
        Assert.True(bits.Sum() < 256, "the exit code must fit an exit status");
        Assert.All(bits, b => Assert.Equal(0, b & (b - 1)));
    }

    [Fact]
    public void The_help_documents_every_class_bit()
    {
        var help = DoctorCommand.ExitCodeHelp();
        foreach (var d in RuntimeClassTable.All)
            Assert.Contains($"{d.DoctorExitBit} ({d.Name} unusable)", help, StringComparison.Ordinal);
        Assert.Contains("1 (kata unusable), 2 (gvisor unusable), 4 (runc unusable), 32 (kata-clh unusable),", help, StringComparison.Ordinal);
        Assert.Contains("8 (something every session needs is missing), 16 (", help, StringComparison.Ordinal);
        Assert.Contains($"{DoctorCommand.BackendAiBit} ([backendai] is set", help, StringComparison.Ordinal);
        Assert.Contains(RuntimeClassTable.Names, DoctorCommand.Create().Description, StringComparison.Ordinal);
    }

    [Fact]
    public void Doctor_checks_every_class_of_the_table_and_reports_one_this_host_cannot_run()
    {
        var checks = DoctorCommand.Run(new Core.AgentOptions { DataDir = Path.GetTempPath() });
        foreach (var d in RuntimeClassTable.All)
        {
            var own = checks.Where(c => c.Area == d.Name).ToList();
            Assert.NotEmpty(own);
            Assert.Equal(own.All(c => c.Ok), (DoctorCommand.ExitCode(checks) & d.DoctorExitBit) == 0);
        }
        // No KVM here (README): both Kata classes are reported unusable, naming /dev/kvm.
        if (!HostChecks.Kvm().Ok)
        {
            Assert.Contains(checks, c => c.Area == "kata-clh" && c.Name == "/dev/kvm" && !c.Ok);
            Assert.NotEqual(0, DoctorCommand.ExitCode(checks) & 32);
        }
    }

    [Fact]
    public void The_runc_only_warning_follows_the_table()
    {
        var options = new Core.AgentOptions { AllowedRuntimeClasses = ["kata-clh", "gvisor", "runc"] };
        Assert.Contains("runc is the only allowed runtime class", DoctorCommand.RuncOnlyWarning(options, exit: 32 | 2), StringComparison.Ordinal);
        Assert.Null(DoctorCommand.RuncOnlyWarning(options, exit: 2));
    }

    [Fact]
    public void Config_takes_every_class_of_the_table_and_its_config_path_key()
    {
        var config = KataAgentConfig.Parse("""
            [runtime]
            default_class = "kata-clh"
            allowed_classes = ["kata-clh", "gvisor"]
            kata_clh_config_path = "/etc/kata/clh.toml"
            """, "t.toml", NoEnvironment);
        Assert.Equal("kata-clh", config.Agent.DefaultRuntimeClass);
        Assert.Equal("/etc/kata/clh.toml", RuntimeClassTable.Get("kata-clh").ConfigPath(config.Agent));
        Assert.Equal("", RuntimeClassTable.Get("kata").ConfigPath(config.Agent));
        var kata = KataAgentConfig.Parse("[runtime]\nkata_config_path = \"/etc/kata/qemu.toml\"\nkata_clh_config_path = \"\"", "t.toml", NoEnvironment);
        Assert.Equal("/etc/kata/qemu.toml", RuntimeClassTable.Get("kata").ConfigPath(kata.Agent));
        Assert.Equal(RuntimeClassTable.Get("kata-clh").DefaultConfigPath, RuntimeClassTable.Get("kata-clh").ConfigPath(kata.Agent));
        var e = Assert.Throws<ConfigException>(() => KataAgentConfig.Parse("[runtime]\nallowed_classes = [\"kata-fc\"]", "t.toml", NoEnvironment));
        Assert.Contains($"'kata-fc' is not a runtime class ({RuntimeClassTable.Names})", e.Message, StringComparison.Ordinal);
        Assert.All(RuntimeClassTable.All.Where(d => d.ConfigPathKey is not null),
            d => Assert.Contains(ConfigKeys.All, k => k.Name == $"runtime.{d.ConfigPathKey}"));
    }

    /// <summary>
    /// The example config lists the classes as the table has them (name, kind, doctor bit, description); when they
    /// disagree, the message is the block to paste into kata-agent.example.toml.
    /// </summary>
    [Fact]
    public void The_example_config_lists_the_classes_of_the_table()
    {
        var dir = AppContext.BaseDirectory;
        while (dir is not null && !File.Exists(Path.Combine(dir, "KataAgent.slnx")))
            dir = Path.GetDirectoryName(dir);
        var text = File.ReadAllText(Path.Combine(dir ?? throw new InvalidOperationException("not run from a checkout"), "kata-agent.example.toml"));
        var listed = text.Split('\n').Where(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^#   [a-z][a-z0-9-]* +(vm|user-space kernel|shared kernel) +\d+  ")).ToList();
        var expected = RuntimeClassTable.All.Select(d =>
            $"#   {d.Name,-9} {KindText(d.Kind),-17} {d.DoctorExitBit,2}  {d.Description}").ToList();
        Assert.True(expected.SequenceEqual(listed), "kata-agent.example.toml [runtime] should list:\n" + string.Join('\n', expected));
    }

    private static string KindText(Containerd.Runtime.RuntimeKind kind) => kind switch
    {
        Containerd.Runtime.RuntimeKind.Vm => "vm",
        Containerd.Runtime.RuntimeKind.UserSpaceKernel => "user-space kernel",
        _ => "shared kernel",
    };
}
