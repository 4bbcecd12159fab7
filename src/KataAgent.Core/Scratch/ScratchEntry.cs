namespace KataAgent.Core.Scratch;

public enum ScratchEntryType
{
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

/// <summary>One directory entry as lstat sees it; <see cref="LinkTarget"/> is the link's text, never resolved.</summary>
public sealed record ScratchEntry(
    string Name,
    ScratchEntryType Type,
    long Size,
    UnixFileMode Mode,
    DateTimeOffset ModifiedAt,
    string? LinkTarget,
    int LinkCount)
{
    internal static ScratchEntryType TypeOf(in Native.Statx st) => st.FileType switch
    {
        Native.S_IFREG => ScratchEntryType.File,
        Native.S_IFDIR => ScratchEntryType.Directory,
        Native.S_IFLNK => ScratchEntryType.Symlink,
        Native.S_IFIFO => ScratchEntryType.Fifo,
        Native.S_IFSOCK => ScratchEntryType.Socket,
        Native.S_IFCHR => ScratchEntryType.CharDevice,
        Native.S_IFBLK => ScratchEntryType.BlockDevice,
        _ => ScratchEntryType.Unknown,
    };

    internal static UnixFileMode ModeOf(in Native.Statx st) => (UnixFileMode)(st.Mode & 0xFFF);

    internal static DateTimeOffset MTimeOf(in Native.Statx st) =>
        DateTimeOffset.FromUnixTimeSeconds(st.MTime.Seconds).AddTicks(st.MTime.Nanoseconds / 100);
}
