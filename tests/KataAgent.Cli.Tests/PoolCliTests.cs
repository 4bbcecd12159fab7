using System.Text.Json;
using KataAgent.Testing;

namespace KataAgent.Cli.Tests;

/// <summary>A CLI environment whose config has one warm pool (runc, 0.5 cpu, 256 MiB, one idle member).</summary>
public sealed class PoolCliEnvironment : CliEnvironment
{
    public const string Image = "kata-agent/python:3-bookworm";

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        await File.AppendAllTextAsync(ConfigPath, $"""

            [[pool]]
            image = "{Image}"
            runtime = "runc"
            cpus = 0.5
            memory = "256MiB"
            min = 1
            target_idle = 1
            max = 1
            """);
    }
}

/// <summary>
/// `kata-agent pool ls` against a serve with a [[pool]] entry: the pool fills, a matching `session create` claims its
/// member (claims go up, the table says so), and a serve stopped with an idle member leaves nothing behind.
/// </summary>
public sealed class PoolCliTests(PoolCliEnvironment env) : IClassFixture<PoolCliEnvironment>
{
    [Fact]
    public async Task Pool_ls_shows_the_pool_filling_and_a_claim_and_a_stopped_serve_leaves_nothing()
    {
        var serve = await ServeProcess.StartAsync(env);
        try
        {
            // A fresh data dir has no image: the refiller says so and lives on, retrying until it is there.
            var missing = await Eventually.WaitAsync(async () => await PoolAsync(), p => p.RefillFailures > 0,
                "the refiller to report the missing image", TimeSpan.FromMinutes(2));
            Assert.Contains(PoolCliEnvironment.Image, missing.LastError, StringComparison.Ordinal);
            var built = await env.RunAsync("image", "build-base");
            Assert.True(built.ExitCode == 0, built.ToString());
            var filled = await Eventually.WaitAsync(async () => await PoolAsync(), p => p.Idle == 1,
                "the pool to hold its idle member", TimeSpan.FromMinutes(3));
            Assert.Equal("kata-agent/python:3-bookworm@runc/0.5cpu/256MiB", filled.Key);
            Assert.Equal(0, filled.Claims);

            var created = await env.RunAsync("session", "create", "--runtime", "runc", "--cpu", "0.5", "--mem", "256MiB");
            Assert.True(created.ExitCode == 0, created.ToString());
            var id = created.Stdout.Trim();
            var claimed = await PoolAsync();
            Assert.Equal(1, claimed.Claims);
            var ran = await env.RunAsync("session", "exec", id, "-c", "print('from the pool')");
            Assert.True(ran.ExitCode == 0 && ran.Stdout == "from the pool\n", ran.ToString());

            var table = await env.RunAsync("pool", "ls");
            Assert.True(table.ExitCode == 0, table.ToString());
            Assert.Contains("kata-agent/python:3-bookworm@runc/0.5cpu/256MiB", table.Stdout, StringComparison.Ordinal);
            Assert.Contains("1/1/1", table.Stdout, StringComparison.Ordinal);
            Assert.Equal(0, (await env.RunAsync("session", "rm", id)).ExitCode);
            // Refilled after the claim: the serve stops with an idle member, which it must take down with it.
            await Eventually.WaitAsync(async () => await PoolAsync(), p => p.Idle == 1, "the pool to refill", TimeSpan.FromMinutes(3));
        }
        catch
        {
            await ServeProcess.StopAsync(serve);
            throw;
        }
        Assert.Equal(0, await ServeProcess.StopAsync(serve));
        var census = await env.CensusAsync();
        Assert.True(census.IsClean, census.ToString());
    }

    [Fact]
    public async Task Pool_ls_without_pools_says_how_to_configure_one()
    {
        var plain = new CliEnvironment();
        await plain.InitializeAsync();
        try
        {
            var serve = await ServeProcess.StartAsync(plain);
            try
            {
                var listed = await plain.RunAsync("pool", "ls");
                Assert.True(listed.ExitCode == 0, listed.ToString());
                Assert.Contains("no warm pools", listed.Stderr + listed.Stdout, StringComparison.Ordinal);
                Assert.Contains("[[pool]]", listed.Stderr + listed.Stdout, StringComparison.Ordinal);
            }
            finally
            {
                Assert.Equal(0, await ServeProcess.StopAsync(serve));
            }
        }
        finally
        {
            await plain.DisposeAsync();
        }
    }

    private sealed record PoolRow(string Key, int Idle, int Filling, long Claims, long RefillFailures, string LastError);

    private async Task<PoolRow> PoolAsync()
    {
        var listed = await env.RunAsync("pool", "ls", "--json");
        Assert.True(listed.ExitCode == 0, listed.ToString());
        using var json = JsonDocument.Parse(listed.Stdout);
        var pool = Assert.Single(json.RootElement.GetProperty("pools").EnumerateArray());
        static long Number(JsonElement e, string name) =>
            e.TryGetProperty(name, out var v) ? (v.ValueKind == JsonValueKind.String ? long.Parse(v.GetString()!, System.Globalization.CultureInfo.InvariantCulture) : v.GetInt64()) : 0;
        return new PoolRow(pool.GetProperty("key").GetString()!, (int)Number(pool, "idle"), (int)Number(pool, "filling"), Number(pool, "claims"),
            Number(pool, "refillFailures"), pool.TryGetProperty("lastError", out var error) ? error.GetString() ?? "" : "");
    }
}
