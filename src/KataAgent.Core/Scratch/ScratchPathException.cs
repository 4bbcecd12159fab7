namespace KataAgent.Core.Scratch;

/// <summary>Why a scratch path operation was refused; lets the API layer map it to a status code.</summary>
public enum ScratchPathError
{
    InvalidPath,
    NotFound,
    AlreadyExists,
    IsSymlink,
    EscapesWorkDir,
    NotRegularFile,
    NotDirectory,
    IsDirectory,
    HardLinked,
    TooLarge,
    TooDeep,
    MountPoint,
    Raced,
    IoError,
}

/// <summary>A refused or failed scratch operation, naming the (guest-relative) path and the reason.</summary>
public sealed class ScratchPathException : IOException
{
    public ScratchPathException(string path, ScratchPathError error, string reason, Exception? inner = null)
        : base($"'{path}': {reason}", inner)
    {
        Path = path;
        Error = error;
        Reason = reason;
    }

    public string Path { get; }
    public ScratchPathError Error { get; }
    public string Reason { get; }
}
