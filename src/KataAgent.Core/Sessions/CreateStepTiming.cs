namespace KataAgent.Core.Sessions;

/// <summary>One create step that completed, and how long it ran (<see cref="SessionCreator.StepNames"/> names the steps).</summary>
public sealed record CreateStepTiming(string Step, TimeSpan Elapsed);
