namespace KataAgent.Network;

/// <summary>Runs a synchronous function on a new OS thread that ends afterwards, and awaits it without blocking.</summary>
internal static class DedicatedThread
{
    public static Task<T> RunAsync<T>(Func<T> function, string name)
    {
        // RunContinuationsAsynchronously: the awaiting code must not continue on the (namespace-switched) thread.
        var completion = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                completion.SetResult(function());
            }
            catch (Exception e)
            {
                completion.SetException(e);
            }
        })
        {
            IsBackground = true,
            Name = name.Length > 15 ? name[..15] : name,
        };
        thread.Start();
        return completion.Task;
    }

    public static Task RunAsync(Action action, string name) => RunAsync(() => { action(); return true; }, name);
}
