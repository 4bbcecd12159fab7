using System.IO.Compression;
using KataAgent.BackendAi.Events;
using KataAgent.BackendAi.Serialization;
using KataAgent.BackendAi.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.BackendAi.Tests.Events;

/// <summary>The heartbeats as the manager reads them from a real Redis, decoded by our codec and by Backend.AI's unpacker.</summary>
public sealed class AgentHeartbeatTests
{
    private const string AgentId = "i-heartbeat";

    private static readonly IBackendAiCodec Codec = BackendAiCodec.Instance;

    private static async Task<(RedisEventProducer Producer, AgentHeartbeat Heartbeat)> StartAsync(RedisServer redis, IAgentFacts facts)
    {
        var producer = await RedisEventProducer.StartAsync(new RedisEventProducerOptions
        {
            Host = "127.0.0.1",
            Port = redis.Port,
            RetryInitialDelay = TimeSpan.FromMilliseconds(50),
            RetryMaxDelay = TimeSpan.FromMilliseconds(500),
        }, AgentId, Codec, NullLogger.Instance);
        var heartbeat = new AgentHeartbeat(new AgentHeartbeatOptions
        {
            AgentId = AgentId,
            RpcAddress = "10.1.2.3:6001",
            Region = "local",
            ScalingGroup = "default",
            HeartbeatInterval = TimeSpan.FromSeconds(1),
            StatusHeartbeatInterval = TimeSpan.FromSeconds(2),
        }, facts, producer, Codec, NullLogger.Instance);
        await heartbeat.StartAsync();
        return (producer, heartbeat);
    }

    [SkippableFact]
    public async Task Agent_started_then_a_heartbeat_with_the_AgentInfo_the_manager_validates_and_agent_terminated_on_stop()
    {
        await using var redis = await RedisServer.StartNewAsync();
        await using var reader = await EventStreamReader.ConnectAsync(redis);
        var kernelId = Guid.NewGuid();
        var facts = new FakeAgentFacts
        {
            Containers = [new AgentContainer(kernelId, "c-" + kernelId.ToString("N"), "running"), new AgentContainer(Guid.NewGuid(), "c-exited", "exited")],
        };
        var (producer, heartbeat) = await StartAsync(redis, facts);
        await using (producer)
        {
            var started = await reader.WaitForAsync(x => x.Name == "agent_started", "agent_started");
            Assert.Equal(new object?[] { "self-started" }, Codec.Unpack(started.Args));

            var beat = await reader.WaitForAsync(x => x.Name == "agent_heartbeat", "agent_heartbeat");
            Assert.Equal(AgentId, beat.Source);
            var info = (Dictionary<object, object?>)Assert.Single((object?[])Codec.Unpack(beat.Args)!)!;
            Assert.Equal("10.1.2.3", info["ip"]);
            Assert.Equal("local", info["region"]);
            Assert.Equal("default", info["scaling_group"]);
            Assert.Equal("tcp://10.1.2.3:6001", info["addr"]);
            Assert.Null(info["public_key"]);
            Assert.Equal("10.1.2.3", info["public_host"]);
            var slots = Assert.IsType<ResourceSlot>(info["available_resource_slots"]);
            Assert.Equal(4m, slots["cpu"]);
            Assert.Equal(8m * 1024 * 1024 * 1024, slots["mem"]);
            var units = (Dictionary<object, object?>)info["slot_key_and_units"]!;
            Assert.Equal("count", units["cpu"]);
            Assert.Equal("bytes", units["mem"]);
            Assert.Equal(AgentHeartbeat.HostArchitecture(), info["architecture"]);
            Assert.Equal(false, info["auto_terminate_abusing_kernel"]);
            Assert.Equal("zlib", ((Dictionary<object, object?>)info["images_opts"]!)["compression"]);
            Assert.Contains("cpu", ((Dictionary<object, object?>)info["compute_plugins"]!).Keys);
            using (var zlib = new ZLibStream(new MemoryStream((byte[])info["images"]!), CompressionMode.Decompress))
            using (var plain = new MemoryStream())
            {
                zlib.CopyTo(plain);
                var images = (object?[])Codec.Unpack(plain.ToArray())!;
                var pair = (object?[])Assert.Single(images)!;
                Assert.Equal(facts.Images[0].Canonical, pair[0]);
                Assert.Equal(facts.Images[0].Digest, pair[1]);
            }

            // Backend.AI's unpacker (CPython pickle underneath) sees a ResourceSlot of Decimal and the images blob.
            var python = await BackendAiPython.RunAsync("""
                import sys, base64, zlib
                from decimal import Decimal
                from ai.backend.common import msgpack
                from ai.backend.common.types import ResourceSlot
                (info,) = msgpack.unpackb(base64.b64decode(sys.stdin.read()))
                slots = info["available_resource_slots"]
                assert type(slots) is ResourceSlot, type(slots)
                assert all(type(v) is Decimal for v in slots.values()), slots
                assert slots["cpu"] == Decimal(4) and slots["mem"] == Decimal(8 * 1024**3), slots
                images = msgpack.unpackb(zlib.decompress(info["images"]))
                expected = {"ip", "region", "scaling_group", "addr", "public_key", "public_host", "available_resource_slots",
                            "slot_key_and_units", "version", "compute_plugins", "images", "architecture",
                            "auto_terminate_abusing_kernel", "images_opts"}
                assert set(info) == expected, set(info) ^ expected
                print(images[0][0], sorted(slots.keys()))
                """, beat.Args);
            Assert.Equal("docker.io/library/python:3.11 ['cpu', 'mem']", python);

            var status = await reader.WaitForAsync(x => x.Name == "agent_status_heartbeat", "agent_status_heartbeat");
            var statusArgs = (object?[])Codec.Unpack(status.Args)!;
            Assert.Equal(AgentId, statusArgs[0]);
            var container = (Dictionary<object, object?>)Assert.Single((object?[])statusArgs[1]!)!; // the exited one is not active
            Assert.Equal(kernelId.ToString("D"), container["kernel_id"]);
            Assert.Equal("running", container["status"]);
            Assert.Equal(2, ((object?[])statusArgs[2]!).Length);

            await heartbeat.StopAsync();
            var terminated = await reader.WaitForAsync(x => x.Name == "agent_terminated", "agent_terminated");
            Assert.Equal(new object?[] { "shutdown" }, Codec.Unpack(terminated.Args));
        }
    }

    [SkippableFact]
    public async Task Redis_restarted_in_the_middle_heartbeats_resume_with_the_newest_state()
    {
        await using var redis = await RedisServer.StartNewAsync();
        await using var reader = await EventStreamReader.ConnectAsync(redis);
        var facts = new FakeAgentFacts();
        var (producer, heartbeat) = await StartAsync(redis, facts);
        await using (producer)
        await using (heartbeat)
        {
            await reader.WaitForAsync(x => x.Name == "agent_heartbeat", "a heartbeat before the outage");

            await redis.StopAsync();
            // What changed while Redis was away must reach the manager with the next heartbeat that gets through.
            facts.Images = [new AgentImage("docker.io/library/python:3.12", "sha256:" + new string('b', 64))];
            await Task.Delay(TimeSpan.FromSeconds(4)); // several heartbeats fail meanwhile
            await redis.RestartAsync();

            var after = await reader.WaitForAsync(x => x.Name == "agent_heartbeat" && ImageOf(x) == "docker.io/library/python:3.12",
                "a heartbeat with the new image after the restart");
            Assert.Equal(AgentId, after.Source);
            // Heartbeats keep coming after the resume.
            await reader.WaitForAsync(x => x.Name == "agent_heartbeat" && x.Id != after.Id, "a further heartbeat");
            Assert.True(producer.SupersededCount > 0, "heartbeats that waited were replaced by newer ones");
        }
    }

    private static string? ImageOf(StreamEvent e)
    {
        var info = (Dictionary<object, object?>)((object?[])Codec.Unpack(e.Args)!)[0]!;
        using var zlib = new ZLibStream(new MemoryStream((byte[])info["images"]!), CompressionMode.Decompress);
        using var plain = new MemoryStream();
        zlib.CopyTo(plain);
        var images = (object?[])Codec.Unpack(plain.ToArray())!;
        return images.Length > 0 ? ((object?[])images[0]!)[0] as string : null;
    }
}
