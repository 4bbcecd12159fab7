using System.Text.Json;

namespace KataAgent.Oci;

/// <summary>Builds, checks and serializes runtime specs.</summary>
public static class Specs
{
    public const string OciVersion = "1.0.2";

    /// <summary>The type URL containerd expects on the <c>Any</c> that carries a container's spec.</summary>
    public const string ContainerdSpecTypeUrl = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

    /// <summary>
    /// The default spec, then each option in order, then the finishing touches (default PATH,
    /// seccomp matched to the final capabilities), then <see cref="Validate"/>.
    /// Throws <see cref="InvalidSpecException"/> if an option or the result is invalid.
    /// </summary>
    public static Spec Generate(params SpecOpt[] opts)
    {
        var spec = CreateDefault();
        foreach (var opt in opts)
            opt(spec);
        Finish(spec);
        Validate(spec);
        return spec;
    }

    /// <summary>The starting point of <see cref="Generate"/>; it has no args yet, so it is not valid on its own.</summary>
    public static Spec CreateDefault() => new()
    {
        OciVersion = OciVersion,
        Process = new Process
        {
            Terminal = false,
            User = new User { Uid = 0, Gid = 0 },
            Env = [],
            Cwd = "/",
            Capabilities = CapabilitySet(SpecDefaults.Capabilities),
            Rlimits = [new PosixRlimit { Type = "RLIMIT_NOFILE", Soft = SpecDefaults.NoFileLimit, Hard = SpecDefaults.NoFileLimit }],
            NoNewPrivileges = true,
        },
        Root = new Root { Path = SpecDefaults.RootfsPath, Readonly = false },
        Mounts = SpecDefaults.Mounts(),
        Annotations = [],
        Linux = new Linux
        {
            Namespaces = SpecDefaults.Namespaces.Select(t => new LinuxNamespace { Type = t }).ToList(),
            Resources = new LinuxResources { Devices = SpecDefaults.Devices() },
            Seccomp = SeccompProfiles.Default(SpecDefaults.Capabilities),
            MaskedPaths = [.. SpecDefaults.MaskedPaths],
            ReadonlyPaths = [.. SpecDefaults.ReadonlyPaths],
        },
        SeccompIsDefault = true,
    };

    internal static LinuxCapabilities CapabilitySet(IEnumerable<string> caps)
    {
        var list = caps.Distinct(StringComparer.Ordinal).ToList();
        // No inheritable/ambient set: an exec of a file with capabilities must not regain them (CVE-2022-24769).
        return new LinuxCapabilities { Bounding = [.. list], Effective = [.. list], Permitted = [.. list] };
    }

    private static void Finish(Spec spec)
    {
        if (spec.Process is { } process)
        {
            process.Env ??= [];
            if (!process.Env.Any(e => EnvKey(e) == "PATH"))
                process.Env.Insert(0, "PATH=" + SpecDefaults.Path);
        }

        if (spec.SeccompIsDefault && spec.Linux is { } linux)
            linux.Seccomp = SeccompProfiles.Default(spec.Process?.Capabilities?.Bounding ?? [], spec.DefaultSeccompAllowsClone3);
    }

    /// <summary>Checks the rules the agent relies on; throws <see cref="InvalidSpecException"/> naming every broken one.</summary>
    public static void Validate(Spec spec)
    {
        var problems = SpecValidator.Check(spec);
        if (problems.Count > 0)
            throw new InvalidSpecException(problems);
    }

    /// <summary>Validates, then serializes to the JSON a runtime reads as config.json.</summary>
    public static string ToJson(Spec spec, bool indented = false)
    {
        Validate(spec);
        var info = indented
            ? new OciJsonContext(new JsonSerializerOptions(OciJsonContext.Default.Options) { WriteIndented = true }).Spec
            : OciJsonContext.Default.Spec;
        return JsonSerializer.Serialize(spec, info);
    }

    /// <summary>Validates, then serializes to UTF-8 JSON (what goes into containerd's <c>Any.value</c>).</summary>
    public static byte[] ToUtf8Json(Spec spec)
    {
        Validate(spec);
        return JsonSerializer.SerializeToUtf8Bytes(spec, OciJsonContext.Default.Spec);
    }

    /// <summary>Reads a spec back (e.g. from a containerd container record). Does not validate.</summary>
    public static Spec FromJson(string json) =>
        JsonSerializer.Deserialize(json, OciJsonContext.Default.Spec)
        ?? throw new InvalidSpecException("spec JSON is null");

    /// <inheritdoc cref="FromJson(string)"/>
    public static Spec FromJson(ReadOnlySpan<byte> utf8Json) =>
        JsonSerializer.Deserialize(utf8Json, OciJsonContext.Default.Spec)
        ?? throw new InvalidSpecException("spec JSON is null");

    /// <summary>
    /// Merges environment entries by key: an entry "K=V" replaces an existing K in place or is
    /// appended; a bare "K" removes K. The result has each key once.
    /// </summary>
    public static List<string> MergeEnv(IEnumerable<string> baseEnv, IEnumerable<string> overrides)
    {
        var result = new List<string>();
        foreach (var entry in baseEnv.Concat(overrides))
        {
            if (string.IsNullOrEmpty(entry))
                throw new InvalidSpecException("process.env: empty entry");
            var key = EnvKey(entry);
            if (key.Length == 0)
                throw new InvalidSpecException($"process.env: entry '{entry}' has an empty name");
            var index = result.FindIndex(e => EnvKey(e) == key);
            if (!entry.Contains('=', StringComparison.Ordinal))
            {
                if (index >= 0)
                    result.RemoveAt(index);
            }
            else if (index >= 0)
            {
                result[index] = entry;
            }
            else
            {
                result.Add(entry);
            }
        }

        return result;
    }

    internal static string EnvKey(string entry)
    {
        var eq = entry.IndexOf('=', StringComparison.Ordinal);
        return eq < 0 ? entry : entry[..eq];
    }
}
