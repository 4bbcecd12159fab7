using KataAgent.BackendAi.Events;

namespace KataAgent.BackendAi.Tests.Events;

/// <summary>Facts the test sets (pure data; the heartbeat's boundary is Redis, which is real).</summary>
internal sealed class FakeAgentFacts : IAgentFacts
{
    public IReadOnlyList<SlotCapacity> Slots { get; set; } =
        [new SlotCapacity("cpu", "count", 4m), new SlotCapacity("mem", "bytes", 8L * 1024 * 1024 * 1024)];

    public IReadOnlyList<AgentImage> Images { get; set; } =
        [new AgentImage("docker.io/library/python:3.11", "sha256:" + new string('a', 64))];

    public IReadOnlyList<AgentContainer> Containers { get; set; } = [];

    public Task<IReadOnlyList<AgentImage>> ListImagesAsync(CancellationToken cancellationToken) => Task.FromResult(Images);
}
