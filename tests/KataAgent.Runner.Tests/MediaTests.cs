using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using NetMQ;
using NetMQ.Sockets;

namespace KataAgent.Runner.Tests;

/// <summary>
/// Query-mode media: objects with IPython's display methods and matplotlib figures reach the agent as
/// <c>["media", {"type": mime, "data": ...}]</c> messages, in order with the run's stdout/stderr and
/// before <c>finished</c>. Checked on the wire (raw sockets), which is the runner's whole contract.
/// </summary>
[Collection(RunnerCollection.Name)]
public sealed class MediaTests(PublishedRunner runner)
{
    // The first bytes of every PNG file.
    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a];

    private const string DisplayClasses = """
        class Png:
            def _repr_png_(self):
                return b'\x89PNG\r\n\x1a\n' + bytes(range(256))
        class PngText:
            def _repr_png_(self):
                return 'aGVsbG8='
        class Html:
            def _repr_html_(self):
                return '<b>kata</b> \u00fc'
        class Svg:
            def _repr_svg_(self):
                return '<svg xmlns="http://www.w3.org/2000/svg"><circle r="3"/></svg>'
        class HtmlAndPng:
            def _repr_png_(self):
                raise AssertionError('png is not asked for when there is html')
            def _repr_html_(self):
                return '<i>rich</i>'

        """;

    [Fact]
    public async Task Display_of_a_png_object_sends_a_data_uri_of_its_bytes()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> run = wire.Run(DisplayClasses + "display(Png())\ndisplay(PngText())");

        Assert.Equal(["media", "media", "finished"], run.Select(message => message.Type));
        (string mime, string data) = Media(run[0]);
        Assert.Equal("image/png", mime);
        const string Prefix = "data:image/png;base64,";
        Assert.StartsWith(Prefix, data);
        byte[] expected = [.. PngSignature, .. Enumerable.Range(0, 256).Select(value => (byte)value)];
        Assert.Equal(expected, Convert.FromBase64String(data[Prefix.Length..]));
        // A str from _repr_png_ is base64 already (as IPython takes it).
        Assert.Equal(("image/png", "data:image/png;base64,aGVsbG8="), Media(run[1]));
        Assert.Equal(0, ExitCode(run[^1]));
    }

    [Fact]
    public async Task Html_and_svg_are_sent_as_raw_text_and_html_wins_over_png()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> run = wire.Run(DisplayClasses + "display(Html(), Svg(), HtmlAndPng())");

        Assert.Equal(["media", "media", "media", "finished"], run.Select(message => message.Type));
        Assert.Equal(("text/html", "<b>kata</b> ü"), Media(run[0]));
        Assert.Equal(("image/svg+xml", "<svg xmlns=\"http://www.w3.org/2000/svg\"><circle r=\"3\"/></svg>"), Media(run[1]));
        Assert.Equal(("text/html", "<i>rich</i>"), Media(run[2]));
        Assert.Equal(0, ExitCode(run[^1]));
    }

    [Fact]
    public async Task A_trailing_expression_with_a_rich_repr_is_media_and_a_plain_one_prints()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> rich = wire.Run(DisplayClasses + "Html()");
        List<WireMessage> plain = wire.Run("40 + 2");

        Assert.Equal(["media", "finished"], rich.Select(message => message.Type));
        Assert.Equal(("text/html", "<b>kata</b> ü"), Media(rich[0]));
        Assert.Equal([new WireMessage("stdout", "42\n"), new WireMessage("finished", "{\"exitCode\": 0}")], plain);
    }

    [Fact]
    public async Task Display_of_a_plain_object_prints_its_repr()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> run = wire.Run("display(42, 'x', None)");

        Assert.Equal([new WireMessage("stdout", "42\n'x'\nNone\n"), new WireMessage("finished", "{\"exitCode\": 0}")], run);
    }

    [Fact]
    public async Task Media_items_arrive_in_order_with_the_output_around_them()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> run = wire.Run(DisplayClasses + """
            import sys
            print('before')
            display(Png())
            sys.stderr.write('between\n')
            display(Html())
            print('after')
            Svg()
            """);

        Assert.Equal(["stdout", "media", "stderr", "media", "stdout", "media", "finished"], run.Select(message => message.Type));
        Assert.Equal("before\n", run[0].Payload);
        Assert.Equal("image/png", Media(run[1]).Mime);
        Assert.Equal("between\n", run[2].Payload);
        Assert.Equal("text/html", Media(run[3]).Mime);
        Assert.Equal("after\n", run[4].Payload);
        Assert.Equal("image/svg+xml", Media(run[5]).Mime);
    }

    [Fact]
    public async Task A_media_item_over_1MiB_is_reported_on_stderr_and_the_repr_printed_instead()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> run = wire.Run("""
            class Huge:
                def _repr_png_(self):
                    return b'x' * (8 << 20)
                def __repr__(self):
                    return '<Huge>'
            Huge()
            """);
        List<WireMessage> next = wire.Run(DisplayClasses + "Html()");

        Assert.DoesNotContain(run, message => message.Type == "media");
        Assert.Contains("over the limit of 1048576 bytes", Text(run, "stderr"));
        Assert.Equal("<Huge>\n", Text(run, "stdout"));
        Assert.Equal(0, ExitCode(run[^1]));
        Assert.Equal(["media", "finished"], next.Select(message => message.Type));
    }

    [Fact]
    public async Task A_failing_display_method_is_reported_and_skipped()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> run = wire.Run("""
            class Broken:
                def _repr_html_(self):
                    raise ValueError('no html today')
                def _repr_svg_(self):
                    return '<svg/>'
            Broken()
            """);

        Assert.Contains("_repr_html_() failed: ValueError: no html today", Text(run, "stderr"));
        Assert.Equal(("image/svg+xml", "<svg/>"), Media(Assert.Single(run, message => message.Type == "media")));
        Assert.Equal(0, ExitCode(run[^1]));
    }

    [Theory]
    [InlineData("body = b'not json'", "a media frame that is not a JSON")]
    [InlineData("body = b'{\"type\": \"image/png\", \"data\": 5}'", "a media frame that is not a JSON")]
    [InlineData("body = b'{' * (2 << 20)", "control frames are at most")]
    public async Task A_media_frame_the_driver_never_writes_stops_the_interpreter(string body, string expected)
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> broken = wire.Run($"import os, struct, time\n{body}\nos.write(4, struct.pack('>cI', b'm', len(body)) + body)\ntime.sleep(30)");
        List<WireMessage> next = wire.Run("print(6 * 7)");

        Assert.DoesNotContain(broken, message => message.Type == "media");
        Assert.Contains("event channel (fd 4)", Text(broken, "stderr"));
        Assert.Contains(expected, Text(broken, "stderr"));
        Assert.NotEqual(0, ExitCode(broken[^1]));
        Assert.Equal("42\n", Text(next, "stdout"));
    }

    [Fact]
    public async Task Matplotlib_is_not_imported_for_the_user_and_its_backend_is_agg()
    {
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> run = wire.Run("import os, sys\nprint('matplotlib' in sys.modules, os.environ.get('MPLBACKEND'))");

        Assert.Equal("False Agg\n", Text(run, "stdout"));
    }

    [Fact]
    public async Task A_matplotlib_plot_arrives_as_one_png_and_its_figure_is_closed_after_the_run()
    {
        RequireMatplotlib();
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> plot = wire.Run("""
            import matplotlib.pyplot as plt
            print('plotting')
            plt.plot([1, 4, 9, 16])
            plt.title('squares')
            print('plotted')
            """);
        List<WireMessage> after = wire.Run("import matplotlib.pyplot as plt\nprint(plt.get_fignums())");

        Assert.Equal(["stdout", "media", "finished"], plot.Select(message => message.Type));
        Assert.Equal("plotting\nplotted\n", plot[0].Payload);
        AssertPng(plot[1]);
        Assert.Equal(0, ExitCode(plot[^1]));
        Assert.Equal([new WireMessage("stdout", "[]\n"), new WireMessage("finished", "{\"exitCode\": 0}")], after);
    }

    [Fact]
    public async Task Pyplot_show_sends_the_figures_where_it_is_called()
    {
        RequireMatplotlib();
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        List<WireMessage> run = wire.Run("""
            import matplotlib.pyplot as plt
            plt.plot([1, 2])
            plt.figure()
            plt.bar([1, 2], [3, 4])
            plt.show()
            print('after show', plt.get_fignums())
            fig, ax = plt.subplots()
            ax.plot([2, 1])
            raise ValueError('after the third figure')
            """);

        Assert.Equal(["media", "media", "stdout", "stderr", "media", "finished"], run.Select(message => message.Type));
        AssertPng(run[0]);
        AssertPng(run[1]);
        Assert.Equal("after show []\n", run[2].Payload);
        // A failed run still shows its figures, after the traceback (as IPython does).
        Assert.Contains("ValueError: after the third figure", run[3].Payload);
        AssertPng(run[4]);
        Assert.Equal(1, ExitCode(run[^1]));
    }

    [Fact]
    public async Task IPython_display_and_its_rich_objects_send_media()
    {
        RequirePythonModule("IPython", "python3-ipython");
        await using RunnerHost host = await RunnerHost.StartAsync(runner);
        using var wire = new WireClient(host);

        // Without an IPython shell, IPython's own display() would only print the objects.
        List<WireMessage> run = wire.Run("""
            import base64
            from IPython.display import display, HTML, Image
            display(HTML('<p>from IPython</p>'))
            Image(data=base64.b64decode('aGVsbG8='), format='png')
            """);

        Assert.Equal(["media", "media", "finished"], run.Select(message => message.Type));
        Assert.Equal(("text/html", "<p>from IPython</p>"), Media(run[0]));
        Assert.Equal(("image/png", "data:image/png;base64,aGVsbG8="), Media(run[1]));
    }

    private static void RequireMatplotlib() => RequirePythonModule("matplotlib", "python3-matplotlib");

    private static void RequirePythonModule(string module, string package)
    {
        using Process check = Process.Start(new ProcessStartInfo(PublishedRunner.PythonPath, ["-c", "import " + module])
        {
            RedirectStandardError = true,
        }) ?? throw new InvalidOperationException("cannot start python3");
        string errors = check.StandardError.ReadToEnd();
        check.WaitForExit();
        if (check.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"this test needs {package} for {PublishedRunner.PythonPath} (scripts/setup.sh installs it): {errors}");
        }
    }

    private static void AssertPng(WireMessage message)
    {
        (string mime, string data) = Media(message);
        Assert.Equal("image/png", mime);
        const string Prefix = "data:image/png;base64,";
        Assert.StartsWith(Prefix, data);
        byte[] png = Convert.FromBase64String(data[Prefix.Length..]);
        Assert.Equal(PngSignature, png[..8]);
        // IHDR follows the signature: a drawn figure has a real size.
        Assert.Equal("IHDR", Encoding.ASCII.GetString(png, 12, 4));
        Assert.InRange(BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), 100, 10_000);
        Assert.InRange(BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)), 100, 10_000);
    }

    private static (string Mime, string Data) Media(WireMessage message)
    {
        Assert.Equal("media", message.Type);
        using JsonDocument document = JsonDocument.Parse(message.Payload);
        return (document.RootElement.GetProperty("type").GetString()!, document.RootElement.GetProperty("data").GetString()!);
    }

    private static int ExitCode(WireMessage finished)
    {
        Assert.Equal("finished", finished.Type);
        using JsonDocument document = JsonDocument.Parse(finished.Payload);
        return document.RootElement.GetProperty("exitCode").GetInt32();
    }

    private static string Text(List<WireMessage> run, string type) =>
        string.Concat(run.Where(message => message.Type == type).Select(message => message.Payload));

    private sealed record WireMessage(string Type, string Payload);

    /// <summary>
    /// The agent's side of the protocol on raw sockets, in place of the host's client (disposed: the
    /// runner's PUSH deals messages round-robin over its peers, so only one may be connected).
    /// </summary>
    private sealed class WireClient : IDisposable
    {
        private readonly PushSocket _push = new();
        private readonly PullSocket _pull = new();

        public WireClient(RunnerHost host)
        {
            host.Client.Dispose();
            foreach (NetMQSocket socket in new NetMQSocket[] { _push, _pull })
            {
                socket.Options.Linger = TimeSpan.Zero;
            }
            _pull.Connect($"tcp://127.0.0.1:{host.OutputPort}");
            _push.Connect($"tcp://127.0.0.1:{host.InputPort}");
            // The runner may still hold the disposed client's connection for a moment; a message dealt to
            // it is lost. Two answered status requests in a row mean every message now comes here.
            var deadline = Stopwatch.StartNew();
            int answered = 0;
            while (answered < 2)
            {
                if (deadline.Elapsed > TimeSpan.FromMinutes(1))
                {
                    throw new TimeoutException($"the runner did not answer status on a fresh connection:\n{host.Log}");
                }
                Send("status", "");
                answered = Receive(TimeSpan.FromSeconds(3)) is { Type: "status" } ? answered + 1 : 0;
            }
        }

        /// <summary>Runs code in query mode; the messages up to and including `finished`, adjacent stdout (stderr) merged.</summary>
        public List<WireMessage> Run(string code)
        {
            Send("code", code);
            var messages = new List<WireMessage>();
            var deadline = Stopwatch.StartNew();
            while (messages.Count == 0 || messages[^1].Type != "finished")
            {
                TimeSpan left = TimeSpan.FromMinutes(2) - deadline.Elapsed;
                if (left <= TimeSpan.Zero)
                {
                    throw new TimeoutException($"no finished within 2 minutes; got {string.Join(", ", messages.Select(message => message.Type))}");
                }
                // A status answer that was slow during the handover is not part of the run.
                if (Receive(left) is not { } message || message.Type == "status")
                {
                    continue;
                }
                if (messages.Count > 0 && message.Type is "stdout" or "stderr" && messages[^1].Type == message.Type)
                {
                    messages[^1] = message with { Payload = messages[^1].Payload + message.Payload };
                }
                else
                {
                    messages.Add(message);
                }
            }
            return messages;
        }

        private void Send(string type, string payload)
        {
            var message = new NetMQMessage(2);
            message.Append(Encoding.ASCII.GetBytes(type));
            message.Append(Encoding.UTF8.GetBytes(payload));
            if (!_push.TrySendMultipartMessage(TimeSpan.FromSeconds(30), message))
            {
                throw new TimeoutException($"could not send {type} to the runner");
            }
        }

        private WireMessage? Receive(TimeSpan timeout)
        {
            var message = new NetMQMessage();
            if (!_pull.TryReceiveMultipartMessage(timeout, ref message))
            {
                return null;
            }
            Assert.Equal(2, message.FrameCount);
            return new WireMessage(message[0].ConvertToString(Encoding.ASCII), message[1].ConvertToString(Encoding.UTF8));
        }

        public void Dispose()
        {
            _push.Dispose();
            _pull.Dispose();
        }
    }
}
