namespace KataAgent.Runner.Execution;

/// <summary>What the agent can do to the run in progress.</summary>
internal interface IRunControl
{
    void SendInput(string text);

    void Interrupt();
}
