using System.Text;
using KataAgent.Core.Sessions;

namespace KataAgent.Core.Tests;

public sealed class SessionLabelsTests
{
    private static SessionRecord RecordWith(string bootstrap) => new()
    {
        KernelId = "k1",
        SessionId = "s1",
        ContainerId = "k1",
        Image = "img",
        RuntimeClass = "gvisor",
        Cpus = 1,
        MemoryBytes = 1 << 30,
        ShmBytes = 64 << 20,
        Ports = [new PublishedPort("replin", "tcp", 2000, "127.0.0.1", 30000), new PublishedPort("replout", "tcp", 2001, "127.0.0.1", 30001)],
        Request = new SessionRequest { Image = "img", BootstrapScript = bootstrap },
    };

    [Theory]
    [InlineData(10)]
    [InlineData(3_000)]
    [InlineData(20_000)]
    public void A_record_of_any_size_is_split_into_labels_containerd_accepts_and_reads_back_whole(int repeat)
    {
        // Multi-byte characters (2, 3 and 4 bytes in UTF-8) so that a split must respect their boundaries.
        var record = RecordWith(string.Concat(Enumerable.Repeat("é€😀a", repeat)));
        var labels = SessionLabels.For(record, "owner", new Dictionary<string, string>());

        foreach (var (key, value) in labels)
            Assert.True(Encoding.UTF8.GetByteCount(key) + Encoding.UTF8.GetByteCount(value) <= 4096, $"label {key} is over containerd's 4096 bytes");
        Assert.True(SessionLabels.TryReadRecord(labels, out var json));
        Assert.Equal(record.Request!.BootstrapScript, SessionRecord.FromJson(json).Request!.BootstrapScript);
        Assert.Equal(repeat > 100, labels.ContainsKey(SessionLabels.Record + ".1"));
    }

    [Fact]
    public void A_container_without_the_record_label_has_no_record()
    {
        Assert.False(SessionLabels.TryReadRecord(new Dictionary<string, string> { ["other"] = "x" }, out _));
    }
}
