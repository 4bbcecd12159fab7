using System.CommandLine;
using KataAgent.Cli.Commands;

namespace KataAgent.Cli.Tests;

public sealed class SessionOptionsTests
{
    private static (SessionOptions Options, ParseResult Parse) Parse(params string[] args)
    {
        var options = new SessionOptions();
        var command = new RootCommand();
        options.AddTo(command);
        return (options, command.Parse(args));
    }

    [Fact]
    public void Image_runner_is_split_into_the_requests_runner_command()
    {
        var (options, parse) = Parse("--image-runner", "python3 -m ai.backend.kernel 'python' \"/usr/bin/python 3\"");
        var request = options.ToRequest(parse, "img");
        Assert.Equal(["python3", "-m", "ai.backend.kernel", "python", "/usr/bin/python 3"], request.RunnerCommand);
        var (plain, none) = Parse();
        Assert.Empty(plain.ToRequest(none, "img").RunnerCommand);
    }

    [Theory]
    [InlineData("python3 'unterminated", "--image-runner: unterminated ' quote")]
    [InlineData("  ", "--image-runner: the command is empty")]
    public void A_bad_image_runner_is_named(string value, string message)
    {
        var (options, parse) = Parse("--image-runner", value);
        var e = Assert.Throws<CliException>(() => options.ToRequest(parse, "img"));
        Assert.StartsWith(message, e.Message, StringComparison.Ordinal);
    }
}
