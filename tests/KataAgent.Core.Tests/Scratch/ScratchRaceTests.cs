using System.Formats.Tar;
using KataAgent.Core.Scratch;
using Xunit.Abstractions;

namespace KataAgent.Core.Tests.Scratch;

/// <summary>
/// A "guest" thread keeps swapping a directory and a symlink to outside under the same name (and a
/// file and a symlink to the secret) with RENAME_EXCHANGE while transfers run. Every operation must
/// either succeed inside the work dir or fail with a ScratchPathException; the outside dir must end
/// exactly as it began. Bounded iterations and no timing assertions: on a slow machine the swaps
/// just interleave less.
/// </summary>
public sealed class ScratchRaceTests(ITestOutputHelper output)
{
    private const int Rounds = 150;

    [Theory]
    [InlineData(ScratchPathResolution.Auto)]
    [InlineData(ScratchPathResolution.ComponentWalk)]
    public async Task Swapping_dir_and_symlink_never_leads_outside(ScratchPathResolution resolution)
    {
        var (sandbox, scratch) = await ScratchSandbox.CreateAsync(resolution);
        using var _ = sandbox;
        var work = scratch.WorkPath;
        // Outside holds names a followed link would reveal.
        await File.WriteAllTextAsync(Path.Combine(sandbox.Outside, "inside.txt"), "OUTSIDE");
        var outsideBefore = sandbox.Snapshot();

        Directory.CreateDirectory(Path.Combine(work, "race"));
        await File.WriteAllTextAsync(Path.Combine(work, "race", "inside.txt"), "inside");
        Directory.CreateSymbolicLink(Path.Combine(work, "alt"), sandbox.Outside);
        await File.WriteAllTextAsync(Path.Combine(work, "leaf"), "leaf-inside");
        File.CreateSymbolicLink(Path.Combine(work, "leafalt"), sandbox.SecretPath);

        using var stop = new CancellationTokenSource();
        var swaps = 0L;
        var swapper = new Thread(() =>
        {
            for (var i = 0; i < 5_000_000 && !stop.IsCancellationRequested; i++)
            {
                if (TestLibc.Exchange(Path.Combine(work, "race"), Path.Combine(work, "alt")) == 0)
                    swaps++;
                TestLibc.Exchange(Path.Combine(work, "leaf"), Path.Combine(work, "leafalt"));
            }
        }) { IsBackground = true, Name = "guest-swapper" };
        swapper.Start();

        var ok = 0;
        var refused = new Dictionary<ScratchPathError, int>();
        async Task Try(Func<Task> operation)
        {
            try
            {
                await operation();
                ok++;
            }
            catch (ScratchPathException e)
            {
                refused[e.Error] = refused.GetValueOrDefault(e.Error) + 1;
            }
        }

        var files = scratch.Files;
        try
        {
            for (var i = 0; i < Rounds; i++)
            {
                await Try(() => files.UploadAsync($"race/up{i % 5}", new MemoryStream("uploaded"u8.ToArray()), 100, createParents: i % 2 == 0));
                await Try(async () => Assert.Equal("inside", await ReadTextAsync(await files.OpenDownloadAsync("race/inside.txt"))));
                await Try(async () => Assert.Equal("leaf-inside", await ReadTextAsync(await files.OpenDownloadAsync("leaf"))));
                await Try(async () => Assert.Equal("leaf-inside", await ReadTextAsync(await files.OpenDownloadAsync("leafalt"))));
                await Try(async () =>
                {
                    var names = (await files.ListAsync("race")).Select(e => e.Name).ToList();
                    Assert.Contains("inside.txt", names);
                    Assert.DoesNotContain("secret", names);
                    Assert.DoesNotContain("sub", names);
                });
                await Try(async () =>
                {
                    var tar = new MemoryStream();
                    await files.DownloadDirectoryAsTarAsync("race", tar, 1 << 20);
                    tar.Position = 0;
                    using var reader = new TarReader(tar);
                    while (await reader.GetNextEntryAsync(copyData: true) is { } entry)
                    {
                        Assert.DoesNotContain("secret", entry.Name);
                        Assert.DoesNotContain("sub", entry.Name);
                        if (entry.Name == "inside.txt")
                            Assert.Equal("inside", await ReadTextAsync(entry.DataStream!));
                    }
                });
                await Try(() => files.DeleteAsync($"race/up{(i + 2) % 5}"));
            }

            // Removing the whole scratch while the guest still swaps: may give up, never escapes.
            try
            {
                await scratch.RemoveAsync();
            }
            catch (IOException e)
            {
                output.WriteLine("remove under swapping gave up: " + e.Message);
            }
        }
        finally
        {
            await stop.CancelAsync();
            swapper.Join();
        }
        await scratch.RemoveAsync();

        output.WriteLine($"{resolution}: swaps={swaps} ok={ok} refused={string.Join(", ", refused.Select(kv => $"{kv.Key}={kv.Value}"))}");
        Assert.Equal(outsideBefore, sandbox.Snapshot());
        Assert.Equal(ScratchSandbox.SecretContent, await File.ReadAllTextAsync(sandbox.SecretPath));
        Assert.Equal("OUTSIDE", await File.ReadAllTextAsync(Path.Combine(sandbox.Outside, "inside.txt")));
        Assert.False(Directory.Exists(scratch.SessionPath));
    }

    private static async Task<string> ReadTextAsync(Stream stream)
    {
        await using (stream)
        {
            using var reader = new StreamReader(stream);
            return await reader.ReadToEndAsync();
        }
    }
}
