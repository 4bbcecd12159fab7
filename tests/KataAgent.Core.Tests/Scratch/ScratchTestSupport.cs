using System.Runtime.InteropServices;
using System.Security.Cryptography;
using KataAgent.Core.Scratch;

namespace KataAgent.Core.Tests.Scratch;

/// <summary>libc calls tests need to build hostile trees .NET cannot make (fifos, devices, hard links, deep nesting, atomic swaps).</summary>
internal static partial class TestLibc
{
    private const int AtFdCwd = -100;
    private const int ODirectory = 0x10000;
    private const int ONoFollow = 0x20000;
    private const int OCloexec = 0x80000;
    public const uint RenameExchange = 2;

    [LibraryImport("libc", EntryPoint = "mkfifo", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MkFifoNative(string path, uint mode);

    [LibraryImport("libc", EntryPoint = "mknod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MkNodNative(string path, uint mode, ulong dev);

    [LibraryImport("libc", EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LinkNative(string existing, string newPath);

    [LibraryImport("libc", EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int RenameAt2(int oldDir, string oldPath, int newDir, string newPath, uint flags);

    [LibraryImport("libc", EntryPoint = "mkdirat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MkdirAt(int dirFd, string path, uint mode);

    [LibraryImport("libc", EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenAt(int dirFd, string path, int flags, uint mode);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    public static void MkFifo(string path) => Check(MkFifoNative(path, 0x1A4), "mkfifo " + path);

    /// <summary>A char device node with /dev/null's numbers (1,3); false when not permitted.</summary>
    public static bool TryMkCharDevice(string path) => MkNodNative(path, 0x2000 | 0x1A4, (1UL << 8) | 3) == 0;

    public static void Link(string existing, string newPath) => Check(LinkNative(existing, newPath), "link " + newPath);

    public static int Exchange(string a, string b) => RenameAt2(AtFdCwd, a, AtFdCwd, b, RenameExchange) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>Nests <paramref name="depth"/> directories named "d" below <paramref name="top"/> (deeper than PATH_MAX allows by path).</summary>
    public static void MakeDeepTree(string top, int depth, Action<int, int>? atEachLevel = null)
    {
        var fd = OpenAt(AtFdCwd, top, ODirectory | ONoFollow | OCloexec, 0);
        Check(fd < 0 ? -1 : 0, "open " + top);
        try
        {
            for (var i = 0; i < depth; i++)
            {
                Check(MkdirAt(fd, "d", 0x1ED), "mkdirat");
                var next = OpenAt(fd, "d", ODirectory | ONoFollow | OCloexec, 0);
                Check(next < 0 ? -1 : 0, "openat");
                Close(fd);
                fd = next;
                atEachLevel?.Invoke(fd, i);
            }
        }
        finally
        {
            Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "symlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int SymlinkAt(string target, int dirFd, string linkPath);

    private static void Check(int rc, string what)
    {
        if (rc != 0)
            throw new IOException($"{what}: errno {Marshal.GetLastPInvokeError()}");
    }
}

/// <summary>A temp dir with a scratch root and an "outside" dir holding a secret the guest must never reach.</summary>
internal sealed class ScratchSandbox : IDisposable
{
    public ScratchSandbox()
    {
        Base = Path.Combine(Path.GetTempPath(), "scratch-test-" + Guid.NewGuid().ToString("N")[..10]);
        ScratchRoot = Path.Combine(Base, "scratch");
        Outside = Path.Combine(Base, "outside");
        Directory.CreateDirectory(ScratchRoot);
        Directory.CreateDirectory(Outside);
        SecretPath = Path.Combine(Outside, "secret");
        File.WriteAllText(SecretPath, SecretContent);
        File.SetLastWriteTimeUtc(SecretPath, new DateTime(2020, 1, 2, 3, 4, 5, DateTimeKind.Utc));
        Directory.CreateDirectory(Path.Combine(Outside, "sub"));
        File.WriteAllText(Path.Combine(Outside, "sub", "keep.txt"), "outside-keep");
        Baseline = Snapshot();
    }

    public const string SecretContent = "TOP-SECRET-outside-the-scratch-dir";

    public string Base { get; }
    public string ScratchRoot { get; }
    public string Outside { get; }
    public string SecretPath { get; }
    public string Baseline { get; }

    public static async Task<(ScratchSandbox Sandbox, ScratchDirectory Scratch)> CreateAsync(ScratchPathResolution resolution = ScratchPathResolution.Auto,
        ScratchConfig? config = null, bool refuseHardLinks = false)
    {
        var sandbox = new ScratchSandbox();
        var scratch = await ScratchDirectory.CreateAsync(sandbox.ScratchRoot, "s-" + Guid.NewGuid().ToString("N")[..8], config ?? new ScratchConfig(),
            0, 0, new ScratchFilesOptions { Resolution = resolution, RefuseHardLinks = refuseHardLinks });
        return (sandbox, scratch);
    }

    /// <summary>Names, sizes, mtimes and content hashes of everything outside: any read-write slip shows here.</summary>
    public string Snapshot()
    {
        var lines = new List<string>();
        foreach (var path in Directory.EnumerateFileSystemEntries(Outside, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var info = new FileInfo(path);
            var isDir = Directory.Exists(path);
            var hash = isDir ? "dir" : Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
            lines.Add($"{Path.GetRelativePath(Outside, path)} {hash} {info.LastWriteTimeUtc.Ticks} {(isDir ? 0 : info.Length)}");
        }
        lines.Add("outside-mtime " + Directory.GetLastWriteTimeUtc(Outside).Ticks);
        return string.Join('\n', lines);
    }

    public void AssertOutsideUntouched()
    {
        Assert.Equal(Baseline, Snapshot());
        Assert.Equal(SecretContent, File.ReadAllText(SecretPath));
    }

    public void Dispose()
    {
        try
        {
            // The tests' own trees may hold read-only dirs; the product's remover copes with them.
            foreach (var dir in Directory.EnumerateDirectories(ScratchRoot))
                ScratchDirectory.Open(ScratchRoot, Path.GetFileName(dir)).RemoveAsync().GetAwaiter().GetResult();
            Directory.Delete(Base, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
