namespace KataAgent.Oci;

/// <summary>Spec options that take their values from an image's config.</summary>
public static class ImageSpecOpts
{
    /// <summary>
    /// Applies an image's Env, Entrypoint/Cmd, WorkingDir and User. Apply it first: options
    /// after it override what it set.
    /// <list type="bullet">
    /// <item>Env: the image's variables are the base; variables already in the spec and any set
    /// by later options replace them by name.</item>
    /// <item>Args (Docker's rule): Entrypoint + (<paramref name="args"/> if given, else Cmd).
    /// Given args replace Cmd, never Entrypoint; an empty <paramref name="args"/> list means
    /// "no arguments", unlike null which means "use Cmd".</item>
    /// <item>Cwd: WorkingDir, or "/" when the image has none.</item>
    /// <item>User: resolved by <see cref="UserResolver"/> (names through
    /// <paramref name="rootfsPath"/>/etc/passwd and /etc/group); empty means root.</item>
    /// <item>Labels, ExposedPorts, StopSignal are not spec material: read them from
    /// <see cref="ImageConfig.Labels"/> and <see cref="ImageConfig.Config"/>.</item>
    /// </list>
    /// </summary>
    public static SpecOpt WithImageConfig(ImageConfig image, IReadOnlyList<string>? args = null, string? rootfsPath = null) => spec =>
    {
        var config = image.Config ?? new ImageRuntimeConfig();
        var process = spec.Process ??= new Process();

        process.Env = Specs.MergeEnv(config.Env ?? [], process.Env ?? []);

        var command = (config.Entrypoint ?? []).Concat(args ?? config.Cmd ?? []).ToList();
        if (command.Count == 0)
            throw new InvalidSpecException("process.args: the image has neither Entrypoint nor Cmd and no arguments were given");
        process.Args = command;

        var workingDir = string.IsNullOrEmpty(config.WorkingDir) ? "/" : config.WorkingDir;
        if (!workingDir.StartsWith('/'))
            throw new InvalidSpecException($"process.cwd: the image's WorkingDir '{workingDir}' is not absolute");
        process.Cwd = workingDir;

        var user = UserResolver.Resolve(config.User ?? "", rootfsPath);
        process.User = new User
        {
            Uid = user.Uid,
            Gid = user.Gid,
            AdditionalGids = user.AdditionalGids.Count > 0 ? [.. user.AdditionalGids] : null,
        };
    };
}
