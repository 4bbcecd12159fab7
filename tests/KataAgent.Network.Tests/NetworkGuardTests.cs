using System.Net;
using KataAgent.Network.Isolation;

namespace KataAgent.Network.Tests;

/// <summary>The guard's tables against the real nftables of this host (no traffic): create, admit, list, sync, remove.</summary>
public sealed class NetworkGuardTests
{
    private static NetworkGuard NewGuard(out string bridge)
    {
        bridge = "katg" + Random.Shared.Next(100000, 999999).ToString(System.Globalization.CultureInfo.InvariantCulture);
        return new NetworkGuard(new NetworkGuardOptions
        {
            BridgeName = bridge,
            Subnet = "10.209.0.0/24",
            Resolvers = [IPAddress.Parse("10.255.255.53")],
            DenyCidrs = ["203.0.113.0/24"],
        });
    }

    [Fact]
    public async Task Sessions_come_and_go_as_set_elements_and_a_refresh_keeps_them()
    {
        var guard = NewGuard(out var bridge);
        try
        {
            await guard.EnsureAsync();
            Assert.True(await guard.ExistsAsync());
            Assert.Empty(await guard.ListEntriesAsync());

            var a = new GuardEntry("veth0a1b2c3d", "0A:58:0a:d1:00:02", IPAddress.Parse("10.209.0.2"), EgressPolicy.Public);
            var b = new GuardEntry("veth9f8e7d6c", "0a:58:0a:d1:00:03", IPAddress.Parse("10.209.0.3"), EgressPolicy.None);
            await guard.AdmitAsync(a);
            await guard.AdmitAsync(a); // idempotent
            await guard.AdmitAsync(b);
            var entries = await guard.ListEntriesAsync();
            Assert.Contains("public:10.209.0.2", entries);
            Assert.DoesNotContain("public:10.209.0.3", entries);
            Assert.Contains("sources:veth9f8e7d6c . 0a:58:0a:d1:00:03 . 10.209.0.3", entries);
            Assert.Equal(5, entries.Count);

            // A refresh (agent restart) rewrites rules and keeps the sessions.
            await guard.EnsureAsync();
            Assert.Equal(entries.Order(), (await guard.ListEntriesAsync()).Order());

            // The policy can tighten on a re-admit.
            await guard.AdmitAsync(a with { Egress = EgressPolicy.None });
            Assert.DoesNotContain("public:10.209.0.2", await guard.ListEntriesAsync());

            await guard.RemoveAsync(a);
            await guard.RemoveAsync(a); // idempotent
            Assert.Equal(2, (await guard.ListEntriesAsync()).Count);

            // Sync makes the sets exactly what is given.
            await guard.ReplaceEntriesAsync([a]);
            Assert.Equal(["ports:veth0a1b2c3d", "public:10.209.0.2", "sources:veth0a1b2c3d . 0a:58:0a:d1:00:02 . 10.209.0.2"], (await guard.ListEntriesAsync()).Order());
            await guard.ReplaceEntriesAsync([]);
            Assert.Empty(await guard.ListEntriesAsync());
        }
        finally
        {
            await guard.DeleteAsync();
        }
        Assert.False(await guard.ExistsAsync());
        Assert.DoesNotContain("kata_agent_" + bridge, (await Host.RunAsync("nft", "list", "tables")).Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void The_ruleset_walls_off_loopback_the_host_other_sessions_and_non_public_ranges()
    {
        var guard = NewGuard(out var bridge);
        var rules = guard.BuildRuleset([IPAddress.Parse("192.0.2.77")]);
        Assert.Contains("localnet ip saddr 10.209.0.0/24 ip daddr 127.0.0.0/8 ct state != { established, related } drop", rules, StringComparison.Ordinal);
        Assert.Contains($"forward iifname \"{bridge}\" oifname \"{bridge}\" drop", rules, StringComparison.Ordinal);
        Assert.Contains($"input iifname \"{bridge}\" drop", rules, StringComparison.Ordinal);
        Assert.Contains($"forward oifname \"{bridge}\" ct status dnat accept", rules, StringComparison.Ordinal);
        Assert.Contains("forward iifname @ports drop", rules, StringComparison.Ordinal);
        foreach (var range in new[] { "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "203.0.113.0/24", "192.0.2.77/32", "10.209.0.0/24" })
            Assert.Contains(range, rules, StringComparison.Ordinal);
        Assert.Contains("add element inet " + guard.TableName + " resolvers { 10.255.255.53 }", rules, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("bad bridge", "10.0.0.0/24")]
    [InlineData("ok0", "10.0.0.1/24")]
    [InlineData("ok0", "fd00::/64")]
    public void Bad_options_are_refused(string bridge, string subnet) =>
        Assert.Throws<ArgumentException>(() => new NetworkGuard(new NetworkGuardOptions { BridgeName = bridge, Subnet = subnet }));

    [Fact]
    public async Task Bad_entries_are_refused_before_nft_runs()
    {
        var guard = NewGuard(out _);
        await Assert.ThrowsAsync<ArgumentException>(() => guard.AdmitAsync(new GuardEntry("veth0; flush ruleset", "0a:58:0a:d1:00:02", IPAddress.Parse("10.209.0.2"), EgressPolicy.Public)));
        await Assert.ThrowsAsync<ArgumentException>(() => guard.AdmitAsync(new GuardEntry("veth0", "not-a-mac", IPAddress.Parse("10.209.0.2"), EgressPolicy.Public)));
        await Assert.ThrowsAsync<ArgumentException>(() => guard.AdmitAsync(new GuardEntry("veth0", "0a:58:0a:d1:00:02", IPAddress.IPv6Loopback, EgressPolicy.Public)));
        Assert.False(await guard.ExistsAsync());
    }
}
