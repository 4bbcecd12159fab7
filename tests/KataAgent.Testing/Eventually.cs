using System.Diagnostics;

namespace KataAgent.Testing;

/// <summary>
/// Polling with a deadline for state a test cannot be told about (a file appearing, a process leaving /proc, a counter
/// moving). Waiting out the clock instead fails on a busy machine or wastes time on an idle one; a bare
/// <c>while (...) await Task.Delay(...)</c> hangs the run when the state never comes. On timeout this throws a
/// <see cref="TimeoutException"/> that says what was awaited and what was last seen (also when the caller's
/// cancellation token ends the wait).
/// </summary>
/// <remarks>
/// Only the BCL: projects that do not reference KataAgent.Testing (it brings the whole agent) compile this file in
/// by link.
/// </remarks>
public static class Eventually
{
    /// <summary>Long enough for a 2-core machine under five parallel test runs.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(2);

    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(50);

    /// <summary>Probes until <paramref name="done"/> holds for what <paramref name="probe"/> returns; returns that value.</summary>
    public static async Task<T> WaitAsync<T>(Func<Task<T>> probe, Func<T, bool> done, string whatWeWaitFor, TimeSpan? timeout = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(probe);
        ArgumentNullException.ThrowIfNull(done);
        var limit = timeout ?? DefaultTimeout;
        var clock = Stopwatch.StartNew();
        var attempts = 0;
        while (true)
        {
            var value = await probe();
            attempts++;
            if (done(value))
                return value;
            if (clock.Elapsed >= limit)
                throw new TimeoutException(Failure(clock.Elapsed, attempts, whatWeWaitFor, value));
            try
            {
                await Task.Delay(PollInterval, cancellationToken);
            }
            catch (OperationCanceledException e)
            {
                // The caller's own limit ran out first: say what was awaited all the same.
                throw new TimeoutException(Failure(clock.Elapsed, attempts, whatWeWaitFor, value) + " (the test's own limit ran out)", e);
            }
        }
    }

    private static string Failure<T>(TimeSpan waited, int attempts, string whatWeWaitFor, T lastObserved) =>
        $"waited {waited.TotalSeconds:0.0} s ({attempts} checks) for {whatWeWaitFor}; last observed: {Describe(lastObserved)}";

    /// <summary>Probes until <paramref name="done"/> holds for what <paramref name="probe"/> returns; returns that value.</summary>
    public static Task<T> WaitAsync<T>(Func<T> probe, Func<T, bool> done, string whatWeWaitFor, TimeSpan? timeout = null,
        CancellationToken cancellationToken = default) =>
        WaitAsync(() => Task.FromResult(probe()), done, whatWeWaitFor, timeout, cancellationToken);

    /// <summary>Waits until <paramref name="condition"/> holds.</summary>
    public static Task WaitAsync(Func<Task<bool>> condition, string whatWeWaitFor, TimeSpan? timeout = null,
        CancellationToken cancellationToken = default) =>
        WaitAsync(condition, held => held, whatWeWaitFor, timeout, cancellationToken);

    /// <summary>Waits until <paramref name="condition"/> holds.</summary>
    public static Task WaitAsync(Func<bool> condition, string whatWeWaitFor, TimeSpan? timeout = null,
        CancellationToken cancellationToken = default) =>
        WaitAsync(() => Task.FromResult(condition()), held => held, whatWeWaitFor, timeout, cancellationToken);

    private static string Describe<T>(T value) => value switch
    {
        null => "null",
        string s => $"\"{s}\"",
        System.Collections.IEnumerable items => "[" + string.Join(", ", items.Cast<object?>().Select(i => i?.ToString() ?? "null")) + "]",
        _ => value?.ToString() ?? "",
    };
}
