using System.Formats.Tar;
using KataAgent.Core.Scratch;

namespace KataAgent.Core.Tests.Scratch;

/// <summary>Listings, tar downloads and single-file downloads stop at their limits with an error (or a flag) that says so.</summary>
public sealed class ScratchBoundsTests
{
    private static async Task<ScratchDirectory> WithLimitsAsync(ScratchSandbox sandbox, int maxList, int maxTarEntries)
    {
        var scratch = await ScratchDirectory.CreateAsync(sandbox.ScratchRoot, "s-" + Guid.NewGuid().ToString("N")[..8], new ScratchConfig(),
            0, 0, new ScratchFilesOptions { MaxListEntries = maxList, MaxTarEntries = maxTarEntries });
        return scratch;
    }

    private static void MakeEmptyFiles(string dir, int count)
    {
        Directory.CreateDirectory(dir);
        for (var i = 0; i < count; i++)
            File.Create(Path.Combine(dir, i.ToString("D6", System.Globalization.CultureInfo.InvariantCulture))).Dispose();
    }

    [Fact]
    public async Task A_listing_stops_at_the_limit_and_says_it_was_cut()
    {
        using var sandbox = new ScratchSandbox();
        var scratch = await WithLimitsAsync(sandbox, maxList: 100, maxTarEntries: 1000);
        MakeEmptyFiles(Path.Combine(scratch.WorkPath, "many"), 250);
        MakeEmptyFiles(Path.Combine(scratch.WorkPath, "few"), 100);

        var cut = await scratch.Files.ListAsync("many");
        Assert.True(cut.Truncated);
        Assert.Equal(100, cut.Count);
        Assert.Equal(100, cut.Limit);
        Assert.Equal(cut.Select(e => e.Name).Order(StringComparer.Ordinal), cut.Select(e => e.Name));

        var whole = await scratch.Files.ListAsync("few");
        Assert.False(whole.Truncated);
        Assert.Equal(100, whole.Count);
    }

    [Fact]
    public async Task A_tar_download_counts_entries_not_only_bytes()
    {
        using var sandbox = new ScratchSandbox();
        var scratch = await WithLimitsAsync(sandbox, maxList: 1000, maxTarEntries: 50);
        MakeEmptyFiles(Path.Combine(scratch.WorkPath, "many"), 51);
        MakeEmptyFiles(Path.Combine(scratch.WorkPath, "fifty"), 50);

        var error = await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.DownloadDirectoryAsTarAsync("many", Stream.Null, long.MaxValue));
        Assert.Equal(ScratchPathError.TooLarge, error.Error);
        Assert.Contains("more than 50", error.Message);

        var tar = new MemoryStream();
        await scratch.Files.DownloadDirectoryAsTarAsync("fifty", tar, long.MaxValue);
        tar.Position = 0;
        var reader = new TarReader(tar);
        var count = 0;
        while (await reader.GetNextEntryAsync() is not null)
            count++;
        Assert.Equal(50, count);
    }

    [Fact]
    public async Task A_sparse_terabyte_file_is_refused_for_download_with_its_size_and_the_limit()
    {
        using var sandbox = new ScratchSandbox();
        var scratch = await WithLimitsAsync(sandbox, 1000, 1000);
        await using (var big = File.Create(Path.Combine(scratch.WorkPath, "big")))
            big.SetLength(1L << 40); // truncate -s 1T: costs the guest nothing

        var error = await Assert.ThrowsAsync<ScratchPathException>(() => scratch.Files.OpenDownloadAsync("big", 1L << 30));
        Assert.Equal(ScratchPathError.TooLarge, error.Error);
        Assert.Contains("1099511627776 bytes", error.Message);
        Assert.Contains("limits.download_max", error.Message);

        // Exactly at the limit still downloads, and only the size seen at open is read.
        await File.WriteAllBytesAsync(Path.Combine(scratch.WorkPath, "small"), new byte[1000]);
        await using var stream = await scratch.Files.OpenDownloadAsync("small", 1000);
        await File.AppendAllTextAsync(Path.Combine(scratch.WorkPath, "small"), "appended meanwhile");
        var copy = new MemoryStream();
        await stream.CopyToAsync(copy);
        Assert.Equal(1000, copy.Length);
    }

    [Fact]
    public async Task Removal_of_a_wide_directory_reads_it_lazily_and_leaves_nothing()
    {
        using var sandbox = new ScratchSandbox();
        var scratch = await WithLimitsAsync(sandbox, 1000, 1000);
        // Wide and nested: 20,000 files at the top, a subdirectory in the middle of them with more.
        MakeEmptyFiles(Path.Combine(scratch.WorkPath, "wide"), 20_000);
        MakeEmptyFiles(Path.Combine(scratch.WorkPath, "wide", "010000-sub"), 5_000);

        await scratch.Files.DeleteAsync("wide");

        Assert.False(Directory.Exists(Path.Combine(scratch.WorkPath, "wide")));
        sandbox.AssertOutsideUntouched();
    }
}
