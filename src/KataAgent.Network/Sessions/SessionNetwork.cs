using System.Text.RegularExpressions;
using KataAgent.Network.Isolation;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace KataAgent.Network;

/// <summary>
/// A session's network namespace wired by CNI. Attach = state file → netns → CNI ADD; detach undoes it in
/// reverse from the state file alone, so it works after a failed attach, twice, and after an agent restart.
/// </summary>
public sealed partial class SessionNetwork
{
    private readonly SessionNetworkOptions _options;
    private readonly ILogger _logger;
    // Striped per-session locks: attach and detach of one session never overlap; no per-session object to leak.
    private readonly SemaphoreSlim[] _locks = Enumerable.Range(0, 64).Select(_ => new SemaphoreSlim(1, 1)).ToArray();

    public SessionNetwork(SessionNetworkOptions options, ILogger? logger = null)
    {
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _options.Network.Validate();
        if (!Path.IsPathRooted(options.StateDirectory))
            throw new ArgumentException($"network state directory must be absolute, got '{options.StateDirectory}'", nameof(options));
        NetworkNamespaces.ValidateName(options.NetnsPrefix + "x");
        _logger = logger ?? NullLogger.Instance;
        Namespaces = new NetworkNamespaces(options.NetnsDirectory);
        Cni = new CniClient(new CniPluginInvoker(options.PluginDirectories, options.PluginTimeout, _logger));
        Guard = options.Guard is { } guard ? new NetworkGuard(guard) : null;
    }

    /// <summary>The host-side isolation of this network's sessions; null when not configured (CNI-only tests).</summary>
    public NetworkGuard? Guard { get; }

    public NetworkNamespaces Namespaces { get; }
    public CniClient Cni { get; }
    public SessionNetworkOptions Options => _options;

    public string NetnsNameOf(string sessionId)
    {
        ValidateSessionId(sessionId);
        return _options.NetnsPrefix + sessionId;
    }

    /// <summary>
    /// Creates the session's namespace and runs CNI ADD with the given published ports. On any failure
    /// (including cancellation) everything done so far is undone before the exception propagates.
    /// </summary>
    public async Task<NetworkAttachment> AttachAsync(string sessionId, IReadOnlyList<PortMapping> portMappings, CancellationToken cancellationToken = default) =>
        await AttachAsync(sessionId, portMappings, EgressPolicy.Public, cancellationToken).ConfigureAwait(false);

    /// <summary>As above, with the session's egress policy (enforced by the guard, when there is one).</summary>
    public async Task<NetworkAttachment> AttachAsync(string sessionId, IReadOnlyList<PortMapping> portMappings, EgressPolicy egress,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(portMappings);
        string netnsName = NetnsNameOf(sessionId);
        ValidatePortMappings(sessionId, portMappings);
        var configList = _options.Network.BuildConfigList();
        // Find every plugin before creating anything: a missing binary would otherwise fail the undo as well.
        foreach (var plugin in CniClient.Validate(configList))
            Cni.Invoker.FindPlugin((string)plugin["type"]!);

        var gate = LockOf(sessionId);
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            string statePath = StatePathOf(sessionId);
            if (File.Exists(statePath))
                throw new SessionNetworkException(sessionId, $"session '{sessionId}' already has a network attachment (state {statePath}); detach it first");
            if (Namespaces.Exists(netnsName))
                throw new SessionNetworkException(sessionId, $"netns '{netnsName}' already exists without network state for session '{sessionId}'; detach the session to remove it");

            var state = new AttachmentState
            {
                SessionId = sessionId,
                NetnsName = netnsName,
                NetnsPath = Namespaces.PathOf(netnsName),
                InterfaceName = _options.InterfaceName,
                ConfigList = configList,
                PortMappings = portMappings.ToList(),
                Egress = egress,
            };
            // Intent first: if the agent dies from here on, a later detach finds the state and undoes the rest.
            Directory.CreateDirectory(_options.StateDirectory);
            await WriteStateAsync(state, CancellationToken.None).ConfigureAwait(false);

            bool netnsCreated = false;
            try
            {
                await Namespaces.CreateAsync(netnsName, cancellationToken).ConfigureAwait(false);
                netnsCreated = true;
                var result = await Cni.AddAsync(configList, state.RuntimeConfig, partial =>
                {
                    // Each plugin's result is what DEL needs to find that plugin's rules (firewall looks up its
                    // rules by the result's IPs); keep it on disk in case the agent dies mid-ADD.
                    state.Result = partial;
                    WriteStateNow(state);
                }, cancellationToken).ConfigureAwait(false);
                state.Complete = true;
                await WriteStateAsync(state, CancellationToken.None).ConfigureAwait(false);
                var attachment = ToAttachment(state, result);
                if (Guard is not null)
                    await WallInAsync(state, attachment, cancellationToken).ConfigureAwait(false);
                _logger.LogInformation("session {Session}: network attached in {Netns}, {Ips}", sessionId, netnsName, string.Join(",", result.Ips.Select(i => i.Address)));
                return attachment;
            }
            catch (Exception addFailure)
            {
                try
                {
                    await TeardownAsync(state, removeNetns: netnsCreated, CancellationToken.None).ConfigureAwait(false);
                }
                catch (Exception rollbackFailure)
                {
                    throw new SessionNetworkException(sessionId,
                        $"network attach of session '{sessionId}' failed ({addFailure.Message}) and undoing it failed too ({rollbackFailure.Message}); "
                        + $"state kept in {statePath} so that DetachAsync can retry",
                        new AggregateException(addFailure, rollbackFailure));
                }
                _logger.LogWarning(addFailure, "session {Session}: network attach failed and was undone", sessionId);
                throw;
            }
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>
    /// CNI DEL with the exact config of the ADD, then removes the namespace and the state. Idempotent: returns
    /// false if there was nothing to remove. A failed DEL keeps the state, so a retry can finish the job.
    /// </summary>
    public async Task<bool> DetachAsync(string sessionId, CancellationToken cancellationToken = default)
    {
        string netnsName = NetnsNameOf(sessionId);
        var gate = LockOf(sessionId);
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var state = await ReadStateAsync(sessionId, cancellationToken).ConfigureAwait(false);
            if (state is not null)
            {
                await TeardownAsync(state, removeNetns: true, cancellationToken).ConfigureAwait(false);
                _logger.LogInformation("session {Session}: network detached", sessionId);
                return true;
            }
            // No state: at most a namespace from a create that died before writing anything else.
            return Namespaces.Delete(netnsName);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <summary>The attachment as recorded at ADD, or null if the session has no completed attachment.</summary>
    public async Task<NetworkAttachment?> GetAsync(string sessionId, CancellationToken cancellationToken = default)
    {
        var state = await ReadStateAsync(sessionId, cancellationToken).ConfigureAwait(false);
        return state is { Complete: true, Result: not null } ? ToAttachment(state, CniResult.Parse(state.Result)) : null;
    }

    /// <summary>CNI CHECK: every plugin verifies that what it set up is still in place.</summary>
    public async Task CheckAsync(string sessionId, CancellationToken cancellationToken = default)
    {
        var state = await ReadStateAsync(sessionId, cancellationToken).ConfigureAwait(false);
        if (state is not { Complete: true, Result: not null })
            throw new SessionNetworkException(sessionId, $"session '{sessionId}' has no completed network attachment to check");
        await Cni.CheckAsync(state.ConfigList, state.RuntimeConfig, state.Result, _options.CheckSkipsPlugins, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Counters of the session's interface, read inside its namespace (rx = received by the session).</summary>
    public Task<InterfaceStatistics> GetStatisticsAsync(string sessionId, CancellationToken cancellationToken = default) =>
        Namespaces.GetInterfaceStatisticsAsync(NetnsNameOf(sessionId), _options.InterfaceName, cancellationToken);

    /// <summary>
    /// Everything of the agent's on the host: attachments from the state directory, and namespaces with the
    /// agent's prefix that have no state. The agent uses it after a restart to rebuild its port pool and to
    /// detach what belongs to no live session.
    /// </summary>
    public async Task<IReadOnlyList<SessionNetworkRecord>> ListAsync(CancellationToken cancellationToken = default)
    {
        var records = new Dictionary<string, SessionNetworkRecord>(StringComparer.Ordinal);
        if (Directory.Exists(_options.StateDirectory))
        {
            foreach (string path in Directory.EnumerateFiles(_options.StateDirectory, "*.json"))
            {
                string sessionId = Path.GetFileNameWithoutExtension(path);
                if (!IsValidSessionId(sessionId))
                    continue;
                var state = await ReadStateAsync(sessionId, cancellationToken).ConfigureAwait(false);
                if (state is null)
                    continue;
                var attachment = state is { Complete: true, Result: not null } ? ToAttachment(state, CniResult.Parse(state.Result)) : null;
                records[sessionId] = new SessionNetworkRecord(sessionId,
                    attachment is null ? SessionNetworkStatus.Incomplete : SessionNetworkStatus.Attached, state.PortMappings, attachment);
            }
        }
        foreach (string name in Namespaces.List())
        {
            if (!name.StartsWith(_options.NetnsPrefix, StringComparison.Ordinal))
                continue;
            string sessionId = name[_options.NetnsPrefix.Length..];
            if (IsValidSessionId(sessionId) && !records.ContainsKey(sessionId))
                records[sessionId] = new SessionNetworkRecord(sessionId, SessionNetworkStatus.NamespaceOnly, [], null);
        }
        return records.Values.OrderBy(r => r.SessionId, StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// Puts the session behind the guard: its port, identity and policy into the guard's sets, and IPv6 off inside
    /// its namespace (the guard enforces IPv4 rules only, so IPv6 must not exist there).
    /// </summary>
    private async Task WallInAsync(AttachmentState state, NetworkAttachment attachment, CancellationToken cancellationToken)
    {
        await Guard!.AdmitAsync(GuardEntryOf(state, attachment), cancellationToken).ConfigureAwait(false);
        await Namespaces.RunInsideAsync(state.NetnsName, () =>
        {
            foreach (var scope in new[] { "all", "default", state.InterfaceName })
                WriteSysctl($"/proc/sys/net/ipv6/conf/{scope}/disable_ipv6", "1");
            return 0;
        }, cancellationToken).ConfigureAwait(false);
        // Nor does the host speak IPv6 to sessions: not on the bridge, not on the session's port.
        string bridge = (string?)state.ConfigList["plugins"]?[0]?["bridge"] ?? "";
        foreach (var hostSide in new[] { bridge, attachment.HostInterface ?? "" }.Where(n => n.Length > 0))
            WriteSysctl($"/proc/sys/net/ipv6/conf/{hostSide}/disable_ipv6", "1");
    }

    // A host without IPv6 has no such files: nothing to turn off.
    private static void WriteSysctl(string path, string value)
    {
        if (File.Exists(path))
            File.WriteAllText(path, value);
    }

    private static GuardEntry GuardEntryOf(AttachmentState state, NetworkAttachment attachment)
    {
        var host = attachment.HostInterface ?? throw new SessionNetworkException(state.SessionId, $"CNI result of session '{state.SessionId}' names no host interface");
        var mac = attachment.Result.Interfaces.FirstOrDefault(i => i.Name == state.InterfaceName && !string.IsNullOrEmpty(i.Sandbox))?.Mac
            ?? throw new SessionNetworkException(state.SessionId, $"CNI result of session '{state.SessionId}' has no MAC for {state.InterfaceName}");
        var ip = attachment.Ip ?? throw new SessionNetworkException(state.SessionId, $"CNI result of session '{state.SessionId}' has no address");
        return new GuardEntry(host, mac, ip, state.Egress);
    }

    // A partial result (ADD died midway) may not identify the port yet: then nothing of it was admitted.
    private GuardEntry? TryGuardEntryOf(AttachmentState state)
    {
        if (state.Result is null)
            return null;
        try
        {
            return GuardEntryOf(state, ToAttachment(state, CniResult.Parse(state.Result)));
        }
        catch (Exception e) when (e is SessionNetworkException or CniException or FormatException)
        {
            return null;
        }
    }

    /// <summary>
    /// Creates or refreshes the guard's tables and makes its session sets exactly the completed attachments on disk
    /// (one atomic step): after an agent restart, or when the tables were lost, every live session is walled in again
    /// and nothing of a gone session stays admitted.
    /// </summary>
    public async Task SyncGuardAsync(CancellationToken cancellationToken = default)
    {
        if (Guard is null)
            return;
        await Guard.EnsureAsync(cancellationToken).ConfigureAwait(false);
        var entries = new List<GuardEntry>();
        if (Directory.Exists(_options.StateDirectory))
        {
            foreach (string path in Directory.EnumerateFiles(_options.StateDirectory, "*.json"))
            {
                string sessionId = Path.GetFileNameWithoutExtension(path);
                if (IsValidSessionId(sessionId) && await ReadStateAsync(sessionId, cancellationToken).ConfigureAwait(false) is { Complete: true, Result: not null } state)
                    entries.Add(GuardEntryOf(state, ToAttachment(state, CniResult.Parse(state.Result))));
            }
        }
        await Guard.ReplaceEntriesAsync(entries, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Removes the CNI iptables rules of this network that belong to none of <paramref name="liveSessionIds"/>: what a
    /// plugin left behind, or finished after its agent died. Call it when no attach is in flight (agent start-up).
    /// </summary>
    public async Task<int> RemoveStaleRulesAsync(IReadOnlySet<string> liveSessionIds, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(liveSessionIds);
        int removed = await CniRuleLeftovers.RemoveAsync(_options.Network.NetworkName, id => !liveSessionIds.Contains(id), _options.PluginTimeout, cancellationToken).ConfigureAwait(false);
        if (removed > 0)
            _logger.LogWarning("removed {Count} iptables rules and chains of network {Network} that belonged to no live session", removed, _options.Network.NetworkName);
        return removed;
    }

    private async Task TeardownAsync(AttachmentState state, bool removeNetns, CancellationToken cancellationToken)
    {
        if (Guard is not null && TryGuardEntryOf(state) is { } entry)
            await Guard.RemoveAsync(entry, cancellationToken).ConfigureAwait(false);
        // DEL is safe even if ADD never ran: plugins treat missing resources as success (host-local releases
        // by container id, bridge ignores a missing netns, portmap deletes chains by name).
        await Cni.DeleteAsync(state.ConfigList, state.RuntimeConfig, state.Result, cancellationToken).ConfigureAwait(false);
        if (_options.RemoveMasqueradeLeftovers)
            await CniRuleLeftovers.RemoveAsync((string)state.ConfigList["name"]!, id => id == state.SessionId, _options.PluginTimeout, cancellationToken).ConfigureAwait(false);
        if (removeNetns)
            Namespaces.Delete(state.NetnsName);
        File.Delete(StatePathOf(state.SessionId));
    }

    private NetworkAttachment ToAttachment(AttachmentState state, CniResult result)
    {
        var addresses = result.IpsOf(state.InterfaceName, state.NetnsPath);
        if (addresses.Count == 0)
            addresses = result.Ips; // a chained plugin may have dropped the sandbox field; the IPs are still ours
        string bridge = (string?)state.ConfigList["plugins"]?[0]?["bridge"] ?? "";
        string? hostInterface = result.Interfaces.FirstOrDefault(i => i.Sandbox is null or "" && i.Name != bridge)?.Name;
        return new NetworkAttachment(state.SessionId, state.NetnsName, state.NetnsPath, state.InterfaceName,
            addresses, hostInterface, state.PortMappings, result);
    }

    private string StatePathOf(string sessionId) => Path.Combine(_options.StateDirectory, sessionId + ".json");

    private async Task<AttachmentState?> ReadStateAsync(string sessionId, CancellationToken cancellationToken)
    {
        string path = StatePathOf(sessionId);
        byte[] bytes;
        try
        {
            bytes = await File.ReadAllBytesAsync(path, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
        return AttachmentState.Deserialize(bytes, path);
    }

    // Write to a temporary file and rename: a reader (or a restarted agent) sees the old or the new state, never half.
    private async Task WriteStateAsync(AttachmentState state, CancellationToken cancellationToken)
    {
        string path = StatePathOf(state.SessionId);
        string temporary = path + ".tmp";
        await File.WriteAllBytesAsync(temporary, state.Serialize(), cancellationToken).ConfigureAwait(false);
        File.Move(temporary, path, overwrite: true);
    }

    private void WriteStateNow(AttachmentState state)
    {
        string path = StatePathOf(state.SessionId);
        string temporary = path + ".tmp";
        File.WriteAllBytes(temporary, state.Serialize());
        File.Move(temporary, path, overwrite: true);
    }

    private SemaphoreSlim LockOf(string sessionId) =>
        _locks[(StringComparer.Ordinal.GetHashCode(sessionId) & int.MaxValue) % _locks.Length];

    private static void ValidateSessionId(string sessionId)
    {
        if (!IsValidSessionId(sessionId))
        {
            throw new ArgumentException(
                $"invalid session id '{sessionId}': it becomes the CNI container id and part of a file name, so 1-128 of letters, digits, '_', '.', '-', starting with a letter or digit",
                nameof(sessionId));
        }
    }

    private static bool IsValidSessionId(string? sessionId) => sessionId is { Length: > 0 and <= 128 } && SessionIdPattern().IsMatch(sessionId);

    private static void ValidatePortMappings(string sessionId, IReadOnlyList<PortMapping> portMappings)
    {
        foreach (var mapping in portMappings)
        {
            ArgumentNullException.ThrowIfNull(mapping);
            mapping.Validate();
        }
        var duplicate = portMappings.GroupBy(p => (p.HostIp, p.HostPort, p.Protocol)).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
            throw new ArgumentException($"session '{sessionId}' publishes host port {duplicate.Key.HostPort}/{duplicate.Key.Protocol} more than once");
    }

    [GeneratedRegex("^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")]
    private static partial Regex SessionIdPattern();
}
