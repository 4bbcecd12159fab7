using KataAgent.Api.V1;
using KataAgent.Cli.Commands;
using Spectre.Console;

namespace KataAgent.Cli.Tests;

/// <summary>The one progress renderer `image pull` and `image push` share.</summary>
public sealed class TransferProgressRendererTests
{
    [Fact]
    public void The_phase_joins_the_description_with_the_reference_escaped()
    {
        var task = new ProgressTask(1, "start", 1);
        TransferProgressRenderer.Apply(task, "pulling reg:5000/[red]x[/]:1", new TransferProgress { Phase = "layers" });
        Assert.Equal("pulling reg:5000/[[red]]x[[/]]:1 (layers)", task.Description);
    }

    [Fact]
    public void The_bar_moves_only_once_the_total_is_known()
    {
        var task = new ProgressTask(1, "start", 1);
        TransferProgressRenderer.Apply(task, "pushing a", new TransferProgress { Phase = "resolving", CompletedBytes = 5 });
        Assert.Equal(1, task.MaxValue);
        Assert.Equal(0, task.Value);

        TransferProgressRenderer.Apply(task, "pushing a", new TransferProgress { Phase = "blobs", CompletedBytes = 300, TotalBytes = 1000 });
        Assert.Equal(1000, task.MaxValue);
        Assert.Equal(300, task.Value);

        TransferProgressRenderer.Apply(task, "pushing a", new TransferProgress { Phase = "manifest", CompletedBytes = 1000, TotalBytes = 1000 });
        Assert.Equal(1000, task.Value);
        Assert.Equal("pushing a (manifest)", task.Description);
    }
}
