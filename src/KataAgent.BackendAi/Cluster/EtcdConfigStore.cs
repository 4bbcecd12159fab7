using Etcdserverpb;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Microsoft.Extensions.Logging;

namespace KataAgent.BackendAi.Cluster;

/// <summary>Backend.AI's config scopes: keys under the node's prefix win over the scaling group's, which win over global ones.</summary>
public enum ConfigScope
{
    Global,
    ScalingGroup,
    Node,
}

/// <summary>
/// etcd the way Backend.AI lays it out (BA25 common/etcd.py): every key under <c>/sorna/{namespace}/</c>, scope
/// prefixes <c>""</c> (global), <c>sgroup/{scaling-group}/</c> and <c>nodes/agents/{agent-id}/</c>, path components
/// of nested dicts percent-quoted. A prefix read gives a nested dict (a key that has both a value and children keeps
/// its value under <c>""</c>); merged reads take each top-level key from the most specific scope that has it.
/// </summary>
public sealed class EtcdConfigStore : IDisposable
{
    private readonly GrpcChannel _channel;
    private readonly KV.KVClient _kv;
    private readonly Watch.WatchClient _watch;
    private readonly string _root;
    private readonly Dictionary<ConfigScope, string> _scopePrefixes;
    private readonly ILogger _logger;

    private EtcdConfigStore(GrpcChannel channel, string @namespace, string agentId, string scalingGroup, ILogger logger)
    {
        _channel = channel;
        _kv = new KV.KVClient(channel);
        _watch = new Watch.WatchClient(channel);
        _root = $"/sorna/{@namespace}/";
        _scopePrefixes = new Dictionary<ConfigScope, string>
        {
            [ConfigScope.Global] = "",
            [ConfigScope.ScalingGroup] = $"sgroup/{scalingGroup}",
            [ConfigScope.Node] = $"nodes/agents/{agentId}",
        };
        _logger = logger;
        Endpoint = channel.Target;
    }

    /// <summary>The etcd endpoint in use.</summary>
    public string Endpoint { get; }

    /// <summary>Connects to the first endpoint that answers (a read of the namespace root proves it).</summary>
    public static async Task<EtcdConfigStore> ConnectAsync(BackendAiClusterOptions options, ILogger logger, CancellationToken cancellationToken = default)
    {
        if (options.EtcdEndpoints.Count == 0)
            throw new BackendAiConfigException("no etcd endpoint configured (backendai.etcd_endpoints)");
        ArgumentException.ThrowIfNullOrEmpty(options.Namespace);
        ArgumentException.ThrowIfNullOrEmpty(options.AgentId);
        var failures = new List<string>();
        foreach (var endpoint in options.EtcdEndpoints)
        {
            var address = endpoint.Contains("://", StringComparison.Ordinal) ? endpoint : "http://" + endpoint;
            var channel = GrpcChannel.ForAddress(address);
            var store = new EtcdConfigStore(channel, options.Namespace, options.AgentId, options.ScalingGroup, logger);
            try
            {
                using var probe = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                probe.CancelAfter(TimeSpan.FromSeconds(10));
                await store._kv.RangeAsync(new RangeRequest { Key = ByteString.CopyFromUtf8(store._root), CountOnly = true }, cancellationToken: probe.Token)
                    .ConfigureAwait(false);
                return store;
            }
            catch (Exception e) when (e is RpcException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                failures.Add($"{endpoint}: {(e is RpcException rpc ? rpc.Status.Detail : "no answer within 10 s")}");
                store.Dispose();
            }
        }
        throw new BackendAiConfigException($"cannot reach etcd ({string.Join("; ", failures)})");
    }

    /// <summary>The full etcd key for <paramref name="key"/> (already quoted) in <paramref name="scope"/>.</summary>
    public string FullKey(string key, ConfigScope scope = ConfigScope.Global)
    {
        var prefix = _scopePrefixes[scope];
        // As Backend.AI: a non-empty scope prefix always ends in '/', so the node's own key is ".../nodes/agents/{id}/".
        var scoped = (prefix.Length > 0 ? prefix.TrimEnd('/') + "/" : "") + key;
        return _root + scoped.TrimStart('/');
    }

    public static string Quote(string component) => Uri.EscapeDataString(component);

    public static string Unquote(string component) => Uri.UnescapeDataString(component);

    public async Task PutAsync(string key, string value, ConfigScope scope = ConfigScope.Global, CancellationToken cancellationToken = default)
    {
        await _kv.PutAsync(new PutRequest { Key = ByteString.CopyFromUtf8(FullKey(key, scope)), Value = ByteString.CopyFromUtf8(value) },
            cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Puts a nested dict under <paramref name="key"/>, quoting each component (BA25 put_prefix).</summary>
    public async Task PutPrefixAsync(string key, IReadOnlyDictionary<string, object> tree, ConfigScope scope = ConfigScope.Global,
        CancellationToken cancellationToken = default)
    {
        var flat = new List<KeyValuePair<string, string>>();
        Flatten(key, tree, flat);
        var txn = new TxnRequest();
        foreach (var (k, v) in flat)
            txn.Success.Add(new RequestOp { RequestPut = new PutRequest { Key = ByteString.CopyFromUtf8(FullKey(k, scope)), Value = ByteString.CopyFromUtf8(v) } });
        await _kv.TxnAsync(txn, cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    private static void Flatten(string prefix, IReadOnlyDictionary<string, object> tree, List<KeyValuePair<string, string>> into)
    {
        foreach (var (k, v) in tree)
        {
            var key = k.Length == 0 ? prefix : $"{prefix}/{Quote(k)}";
            if (v is IReadOnlyDictionary<string, object> child)
                Flatten(key, child, into);
            else
                into.Add(new(key, Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? ""));
        }
    }

    /// <summary>One key, from the most specific scope that has it (node, scaling group, global); null when none.</summary>
    public async Task<string?> GetAsync(string key, CancellationToken cancellationToken = default)
    {
        foreach (var scope in MergeOrder)
        {
            var response = await _kv.RangeAsync(new RangeRequest { Key = ByteString.CopyFromUtf8(FullKey(key, scope)) }, cancellationToken: cancellationToken)
                .ConfigureAwait(false);
            if (response.Kvs.Count > 0)
                return response.Kvs[0].Value.ToStringUtf8();
        }
        return null;
    }

    /// <summary>Everything under <paramref name="key"/> as a nested dict, merged over the scopes (BA25 get_prefix).</summary>
    public async Task<IReadOnlyDictionary<string, object>> GetPrefixAsync(string key, CancellationToken cancellationToken = default)
    {
        var merged = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var scope in MergeOrder)
        {
            var tree = await GetPrefixInScopeAsync(key, scope, cancellationToken).ConfigureAwait(false);
            foreach (var (k, v) in tree)
                merged.TryAdd(k, v);
        }
        return merged;
    }

    private static readonly ConfigScope[] MergeOrder = [ConfigScope.Node, ConfigScope.ScalingGroup, ConfigScope.Global];

    private async Task<Dictionary<string, object>> GetPrefixInScopeAsync(string key, ConfigScope scope, CancellationToken cancellationToken)
    {
        var full = FullKey(key, scope);
        var response = await _kv.RangeAsync(new RangeRequest
        {
            Key = ByteString.CopyFromUtf8(full),
            RangeEnd = ByteString.CopyFrom(PrefixEnd(full)),
            SortOrder = RangeRequest.Types.SortOrder.Ascend,
            SortTarget = RangeRequest.Types.SortTarget.Key,
        }, cancellationToken: cancellationToken).ConfigureAwait(false);
        var result = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var kv in response.Kvs)
        {
            var sub = kv.Key.ToStringUtf8()[full.Length..];
            // Only this key and its children: "config/redis" must not pick up "config/redis2/…".
            if (sub.Length > 0 && sub[0] != '/')
                continue;
            sub = sub.TrimStart('/');
            var parts = sub.Split('/');
            var parent = result;
            foreach (var part in parts[..^1])
            {
                var name = Unquote(part);
                if (!parent.TryGetValue(name, out var existing))
                {
                    existing = new Dictionary<string, object>(StringComparer.Ordinal);
                    parent[name] = existing;
                }
                else if (existing is string value)
                {
                    existing = new Dictionary<string, object>(StringComparer.Ordinal) { [""] = value };
                    parent[name] = existing;
                }
                parent = (Dictionary<string, object>)existing;
            }
            var last = Unquote(parts[^1]);
            if (parent.TryGetValue(last, out var node) && node is Dictionary<string, object> children)
                children[""] = kv.Value.ToStringUtf8();
            else
                parent[last] = kv.Value.ToStringUtf8();
        }
        return result;
    }

    /// <summary>
    /// Returns when a manager is up: at once if any key exists under nodes/manager, else when one is put with the
    /// value "up" (BA25 detect_manager). The watch starts at the revision of the read, so a put in between counts.
    /// <paramref name="watching"/> is called once etcd has created the watch.
    /// </summary>
    public async Task WaitForManagerAsync(Action? watching = null, CancellationToken cancellationToken = default)
    {
        var full = FullKey("nodes/manager");
        var range = await _kv.RangeAsync(new RangeRequest
        {
            Key = ByteString.CopyFromUtf8(full),
            RangeEnd = ByteString.CopyFrom(PrefixEnd(full)),
            CountOnly = true,
        }, cancellationToken: cancellationToken).ConfigureAwait(false);
        if (range.Count > 0)
            return;
        _logger.LogWarning("no manager under {Key} yet: watching etcd until one says \"up\"", full);
        using var call = _watch.Watch(cancellationToken: cancellationToken);
        await call.RequestStream.WriteAsync(new WatchRequest
        {
            CreateRequest = new WatchCreateRequest
            {
                Key = ByteString.CopyFromUtf8(full),
                RangeEnd = ByteString.CopyFrom(PrefixEnd(full)),
                StartRevision = range.Header.Revision + 1,
            },
        }, cancellationToken).ConfigureAwait(false);
        while (await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false))
        {
            var response = call.ResponseStream.Current;
            if (response.Created)
                watching?.Invoke();
            if (response.Canceled)
                throw new BackendAiConfigException($"etcd cancelled the watch on {full}: {response.CancelReason}");
            if (response.Events.Any(e => e.Type == Mvccpb.Event.Types.EventType.Put && e.Kv.Value.ToStringUtf8() == "up"))
            {
                _logger.LogInformation("a manager is up ({Key})", full);
                await call.RequestStream.CompleteAsync().ConfigureAwait(false);
                return;
            }
        }
        throw new BackendAiConfigException($"etcd ended the watch on {full} before a manager came up");
    }

    private static byte[] PrefixEnd(string prefix)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(prefix);
        for (var i = bytes.Length - 1; i >= 0; i--)
        {
            if (bytes[i] < 0xff)
            {
                bytes[i]++;
                return bytes[..(i + 1)];
            }
        }
        return [0];
    }

    public void Dispose() => _channel.Dispose();
}

/// <summary>The cluster's configuration is missing or wrong; the message names the etcd key.</summary>
public sealed class BackendAiConfigException(string message) : Exception(message);
