using Grpc.Core;
using KataAgent.Api.V1;
using CoreCreateStepTiming = KataAgent.Core.Sessions.CreateStepTiming;

namespace KataAgent.Api.Server;

/// <summary>A create's progress on its reply stream: each step's name as it starts, its duration as it ends.</summary>
internal sealed class CreateSessionProgress(IServerStreamWriter<CreateSessionReply> stream) : IProgress<string>, IProgress<CoreCreateStepTiming>
{
    private readonly StreamProgress<CreateSessionReply, CreateSessionReply> _replies = new(stream, reply => reply);

    public void Report(string value) => _replies.Report(new CreateSessionReply { Progress = value });

    public void Report(CoreCreateStepTiming value) => _replies.Report(new CreateSessionReply { StepDone = Mapping.ToProto(value) });

    /// <inheritdoc cref="StreamProgress{T, TItem}.FlushAsync"/>
    public Task FlushAsync() => _replies.FlushAsync();
}
