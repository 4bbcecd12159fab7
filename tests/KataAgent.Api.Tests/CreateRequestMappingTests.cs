using KataAgent.Api.Server;
using KataAgent.Api.V1;

namespace KataAgent.Api.Tests;

public sealed class CreateRequestMappingTests
{
    [Fact]
    public void Runner_command_maps_to_the_request_argv_and_is_empty_when_unset()
    {
        var proto = new CreateSessionRequest { Image = "img" };
        Assert.Empty(Mapping.FromProto(proto).RunnerCommand);
        proto.RunnerCommand.AddRange(["python3", "-m", "ai.backend.kernel", "python"]);
        Assert.Equal(["python3", "-m", "ai.backend.kernel", "python"], Mapping.FromProto(proto).RunnerCommand);
    }
}
