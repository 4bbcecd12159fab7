using System.Runtime.InteropServices;
using KataAgent.Runner.Native;

namespace KataAgent.Runner.Execution;

internal static unsafe class FdWriter
{
    /// <summary>Writes everything; false when the reader is gone.</summary>
    public static bool WriteAll(int fd, ReadOnlySpan<byte> data)
    {
        fixed (byte* start = data)
        {
            int offset = 0;
            while (offset < data.Length)
            {
                nint written = Libc.write(fd, start + offset, data.Length - offset);
                if (written < 0)
                {
                    if (Marshal.GetLastPInvokeError() == Libc.EINTR)
                    {
                        continue;
                    }
                    return false;
                }
                offset += (int)written;
            }
        }
        return true;
    }
}
