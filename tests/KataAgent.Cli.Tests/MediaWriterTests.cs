using KataAgent.Api.V1;
using KataAgent.Cli.Commands;

namespace KataAgent.Cli.Tests;

/// <summary>How `exec`/`run` show media items: files in a directory, one line each, or a placeholder.</summary>
public sealed class MediaWriterTests : IDisposable
{
    private static readonly byte[] Png = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 1, 2, 255];
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "kata-media-test-" + Guid.NewGuid().ToString("N")[..8]);

    private static ConsoleItem Media(string mime, string data) => new() { Kind = "media", Mime = mime, Data = data };

    [Fact]
    public void Media_items_become_numbered_files_with_data_uris_decoded_and_svg_and_html_as_text()
    {
        var writer = new MediaWriter(Path.Combine(_dir, "out"), "run-abc");

        var png = writer.Write(Media("image/png", "data:image/png;base64," + Convert.ToBase64String(Png)));
        var svg = writer.Write(Media("image/svg+xml", "<svg xmlns='http://www.w3.org/2000/svg'/>"));
        var html = writer.Write(Media("text/html", "<b>hi</b>"));
        var bare = writer.Write(Media("image/jpeg", Convert.ToBase64String(Png)));

        var pngPath = Path.Combine(_dir, "out", "run-abc-1.png");
        Assert.Equal(Png, File.ReadAllBytes(pngPath));
        Assert.Equal($"[media image/png written to {pngPath} ({Png.Length} bytes)]", png);
        Assert.Equal("<svg xmlns='http://www.w3.org/2000/svg'/>", File.ReadAllText(Path.Combine(_dir, "out", "run-abc-2.svg")));
        Assert.Contains("run-abc-2.svg", svg, StringComparison.Ordinal);
        Assert.Equal("<b>hi</b>", File.ReadAllText(Path.Combine(_dir, "out", "run-abc-3.html")));
        Assert.Contains("text/html written to", html, StringComparison.Ordinal);
        Assert.Equal(Png, File.ReadAllBytes(Path.Combine(_dir, "out", "run-abc-4.jpg")));
        Assert.Contains("image/jpeg", bare, StringComparison.Ordinal);
    }

    [Fact]
    public void With_writing_off_a_placeholder_names_the_type_and_size_and_nothing_is_written()
    {
        var writer = new MediaWriter(null, "run-abc");

        var line = writer.Write(Media("image/png", "data:image/png;base64," + Convert.ToBase64String(Png)));
        var unknown = writer.Write(new ConsoleItem { Kind = "media", Data = "not json" });

        Assert.Equal($"[media image/png, {Png.Length} bytes]", line);
        Assert.Equal("[media of unknown type, 8 bytes]", unknown);
        Assert.False(Directory.Exists(_dir));
    }

    [Fact]
    public void A_data_uri_fills_in_a_missing_type_and_a_hostile_run_id_cannot_leave_the_directory()
    {
        var writer = new MediaWriter(_dir, "../../etc/x");

        var line = writer.Write(Media("", "data:text/plain,hello%20there"));

        var file = Assert.Single(Directory.GetFiles(_dir));
        Assert.Equal("hello there", File.ReadAllText(file));
        Assert.EndsWith(".txt", file, StringComparison.Ordinal);
        Assert.DoesNotContain("..", Path.GetFileName(file), StringComparison.Ordinal);
        Assert.Contains("text/plain", line, StringComparison.Ordinal);
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir))
            Directory.Delete(_dir, recursive: true);
    }
}
