using KataAgent.BackendAi.Events;
using KataAgent.BackendAi.Serialization;
using KataAgent.BackendAi.Tests.Infrastructure;
using KataAgent.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.BackendAi.Tests.Events;

/// <summary>The event producer against a real redis-server: stream layout, the backlog while Redis is down, the restart.</summary>
public sealed class RedisEventProducerTests
{
    private const string AgentId = "i-test-agent";

    private static readonly IBackendAiCodec Codec = BackendAiCodec.Instance;

    private static Task<RedisEventProducer> StartProducerAsync(RedisServer redis, Func<RedisEventProducerOptions, RedisEventProducerOptions>? tune = null)
    {
        var options = new RedisEventProducerOptions
        {
            Host = "127.0.0.1",
            Port = redis.Port,
            Password = redis.Password,
            RetryInitialDelay = TimeSpan.FromMilliseconds(50),
            RetryMaxDelay = TimeSpan.FromMilliseconds(500),
        };
        return RedisEventProducer.StartAsync(tune?.Invoke(options) ?? options, AgentId, Codec, NullLogger.Instance);
    }

    [SkippableFact]
    public async Task An_event_lands_in_stream_events_of_db_4_with_name_source_and_the_packed_args_tuple()
    {
        await using var redis = await RedisServer.StartNewAsync(password: "s3cret");
        await using var producer = await StartProducerAsync(redis);
        await using var reader = await EventStreamReader.ConnectAsync(redis);
        var kernelId = Guid.NewGuid().ToString();

        await producer.ProduceAsync("kernel_terminated", [kernelId, "session-1", "user-requested", 137L]);

        var e = await reader.WaitForAsync(x => x.Name == "kernel_terminated", "kernel_terminated in stream events (db 4)");
        Assert.Equal(AgentId, e.Source);
        var args = Assert.IsType<object?[]>(Codec.Unpack(e.Args));
        Assert.Equal(new object?[] { kernelId, "session-1", "user-requested", 137L }, args);
        Assert.Empty(await reader.ReadAllAsync(db: 0)); // db 4 only, as REDIS_STREAM_DB

        // Backend.AI's own unpacker reads the same bytes as a tuple.
        var python = await BackendAiPython.RunAsync("""
            import sys, base64
            from ai.backend.common import msgpack
            args = msgpack.unpackb(base64.b64decode(sys.stdin.read()))
            assert isinstance(args, tuple), type(args)
            print(repr(args))
            """, e.Args);
        Assert.Equal($"('{kernelId}', 'session-1', 'user-requested', 137)", python);
    }

    [SkippableFact]
    public async Task The_stream_is_trimmed_to_about_128_entries()
    {
        await using var redis = await RedisServer.StartNewAsync();
        await using var producer = await StartProducerAsync(redis);
        await using var reader = await EventStreamReader.ConnectAsync(redis);

        for (var i = 0; i < 600; i++)
            await producer.ProduceAsync("execution_finished", [$"s-{i}"]);

        var events = await reader.WaitForAsync(x => x.Name == "execution_finished" && (string?)((object?[])Codec.Unpack(x.Args)!)[0] == "s-599", "the last event");
        Assert.NotNull(events);
        var all = await reader.ReadAllAsync();
        // MAXLEN ~ trims whole radix-tree nodes (100 entries by default): bounded, but not exactly 128.
        Assert.InRange(all.Count, 128, 300);
        Assert.Equal(600, producer.SentCount);
    }

    [SkippableFact]
    public async Task While_Redis_is_down_events_wait_and_only_the_newest_heartbeat_is_kept_then_all_arrive_in_order_after_a_restart()
    {
        await using var redis = await RedisServer.StartNewAsync();
        await using var producer = await StartProducerAsync(redis);
        await using var reader = await EventStreamReader.ConnectAsync(redis);
        await producer.ProduceAsync("agent_started", ["self-started"]);
        await reader.WaitForAsync(x => x.Name == "agent_started", "agent_started before the outage");

        await redis.StopAsync();
        var started = DateTime.UtcNow;
        for (var i = 1; i <= 5; i++)
        {
            await producer.ProduceAsync("agent_heartbeat", [new Dictionary<object, object?> { ["seq"] = (long)i }]);
            if (i == 3)
                await producer.ProduceAsync("kernel_terminated", ["k-1", "s-1", "killed", 137L]);
        }
        // The caller never waited for Redis.
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(5));
        // Heartbeats 2..4 were replaced while waiting (1 may be the head the sender is retrying).
        Assert.InRange(producer.SupersededCount, 3, 4);
        Assert.InRange(producer.BacklogCount, 2, 3);

        await redis.RestartAsync();

        var newest = await reader.WaitForAsync(x => x.Name == "agent_heartbeat" && Seq(x) == 5, "heartbeat 5 after the restart");
        var all = (await reader.ReadAllAsync()).ToList();
        var seqs = all.Where(x => x.Name == "agent_heartbeat").Select(Seq).ToList();
        Assert.DoesNotContain(2L, seqs);
        Assert.DoesNotContain(3L, seqs);
        Assert.DoesNotContain(4L, seqs);
        var killed = Assert.Single(all, x => x.Name == "kernel_terminated");
        Assert.True(all.IndexOf(killed) < all.FindIndex(x => x.Id == newest.Id), "kernel_terminated went out before the newer heartbeat");
        Assert.Equal(0, producer.DroppedCount);
        await Eventually.WaitAsync(() => producer.BacklogCount == 0, "an empty backlog");
    }

    [SkippableFact]
    public async Task A_full_backlog_drops_the_oldest_events()
    {
        await using var redis = await RedisServer.StartNewAsync();
        await using var producer = await StartProducerAsync(redis, o => o with { BacklogCapacity = 3 });
        await using var reader = await EventStreamReader.ConnectAsync(redis);
        await redis.StopAsync();

        for (var i = 1; i <= 5; i++)
            await producer.ProduceAsync("kernel_started", [$"k-{i}"]);
        Assert.Equal(2, producer.DroppedCount);
        Assert.Equal(3, producer.BacklogCount);

        await redis.RestartAsync();
        await reader.WaitForAsync(x => x.Name == "kernel_started" && First(x) == "k-5", "k-5 after the restart");
        var names = (await reader.ReadAllAsync()).Select(First).ToList();
        Assert.Equal(["k-3", "k-4", "k-5"], names);
    }

    [SkippableFact]
    public async Task Broadcast_names_are_also_published_on_events_all_as_json_with_base64_args()
    {
        await using var redis = await RedisServer.StartNewAsync();
        await using var reader = await EventStreamReader.ConnectAsync(redis);
        var subscriber = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{redis.Port}");
        await using var _ = subscriber;
        var received = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await subscriber.GetSubscriber().SubscribeAsync(StackExchange.Redis.RedisChannel.Literal("events_all"), (_, message) => received.Enqueue(message!));
        await using var producer = await StartProducerAsync(redis, o => o with { BroadcastNames = new HashSet<string> { "kernel_started" } });

        await producer.ProduceAsync("kernel_started", ["k-1", "s-1", "", new Dictionary<object, object?>()]);
        await producer.ProduceAsync("agent_heartbeat", [new Dictionary<object, object?>()]);

        await reader.WaitForAsync(x => x.Name == "agent_heartbeat", "both events in the stream");
        var json = await Eventually.WaitAsync(() => received.ToArray(), r => r.Length > 0, "a broadcast on events_all");
        var message = Assert.Single(json);
        using var doc = System.Text.Json.JsonDocument.Parse(message);
        Assert.Equal("kernel_started", doc.RootElement.GetProperty("name").GetString());
        Assert.Equal(AgentId, doc.RootElement.GetProperty("source").GetString());
        var args = Assert.IsType<object?[]>(Codec.Unpack(Convert.FromBase64String(doc.RootElement.GetProperty("args").GetString()!)));
        Assert.Equal("k-1", args[0]);
    }

    private static long Seq(StreamEvent e) =>
        (long)((Dictionary<object, object?>)((object?[])Codec.Unpack(e.Args)!)[0]!)["seq"]!;

    private static string? First(StreamEvent e) => ((object?[])Codec.Unpack(e.Args)!)[0] as string;
}
