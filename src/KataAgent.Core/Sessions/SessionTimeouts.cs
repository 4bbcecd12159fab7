namespace KataAgent.Core.Sessions;

/// <summary>
/// The limits a session lives under (docs/END-REASONS.md, "Timeouts"): its request's, else the agent's defaults.
/// <see cref="TimeSpan.Zero"/> means none.
/// </summary>
public sealed record SessionTimeouts(TimeSpan Idle, TimeSpan MaxLifetime, TimeSpan Exec)
{
    public static readonly SessionTimeouts None = new(TimeSpan.Zero, TimeSpan.Zero, TimeSpan.Zero);

    public static SessionTimeouts For(SessionRequest? request, AgentOptions options) => new(
        request?.IdleTimeout ?? options.DefaultIdleTimeout,
        request?.MaxLifetime ?? options.DefaultMaxLifetime,
        request?.ExecTimeout ?? options.DefaultExecTimeout);

    /// <summary>A request's timeouts must be zero (none) or positive.</summary>
    public static void Validate(SessionRequest request)
    {
        Check(request.IdleTimeout, "idle timeout");
        Check(request.MaxLifetime, "maximum lifetime");
        Check(request.ExecTimeout, "exec timeout");

        static void Check(TimeSpan? value, string what)
        {
            if (value is TimeSpan span && span < TimeSpan.Zero)
                throw new SessionRequestException($"the {what} must be zero (none) or positive (got {span})");
        }
    }
}
