using System.Buffers.Binary;
using System.Text;

namespace KataAgent.Runner.Tests;

/// <summary>
/// Reads what a 64-bit little-endian ELF executable needs from the dynamic linker: its DT_NEEDED
/// libraries and the symbol versions named in .gnu.version_r (SHT_GNU_verneed), e.g. GLIBC_2.29.
/// </summary>
public sealed class ElfVersionNeeds
{
    private const uint SectionTypeDynamic = 6;
    private const uint SectionTypeGnuVersionNeeds = 0x6ffffffe;
    private const long DynamicTagNeeded = 1;

    public required IReadOnlyList<string> NeededLibraries { get; init; }
    public required IReadOnlyList<string> Versions { get; init; }

    public static ElfVersionNeeds Read(string path)
    {
        byte[] elf = File.ReadAllBytes(path);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
        {
            throw new InvalidDataException($"{path} is not an ELF file");
        }
        if (elf[4] != 2 || elf[5] != 1)
        {
            throw new InvalidDataException($"{path} is not a 64-bit little-endian ELF file");
        }
        long sectionHeaders = (long)U64(elf, 0x28);
        int sectionHeaderSize = U16(elf, 0x3a);
        int sectionCount = U16(elf, 0x3c);
        var sections = Enumerable.Range(0, sectionCount).Select(index =>
        {
            int at = (int)(sectionHeaders + (index * sectionHeaderSize));
            return (Type: U32(elf, at + 4), Offset: (int)U64(elf, at + 0x18), Size: (int)U64(elf, at + 0x20),
                Link: (int)U32(elf, at + 0x28), Info: (int)U32(elf, at + 0x2c));
        }).ToList();

        var libraries = new List<string>();
        var versions = new List<string>();
        foreach (var section in sections)
        {
            int strings = sections[section.Link].Offset;
            if (section.Type == SectionTypeDynamic)
            {
                for (int at = section.Offset; at + 16 <= section.Offset + section.Size; at += 16)
                {
                    long tag = (long)U64(elf, at);
                    if (tag == 0)
                    {
                        break;
                    }
                    if (tag == DynamicTagNeeded)
                    {
                        libraries.Add(CString(elf, strings + (int)U64(elf, at + 8)));
                    }
                }
            }
            else if (section.Type == SectionTypeGnuVersionNeeds)
            {
                int entry = section.Offset;
                for (int i = 0; i < section.Info; i++)
                {
                    int auxCount = U16(elf, entry + 2);
                    int aux = entry + (int)U32(elf, entry + 8);
                    for (int j = 0; j < auxCount; j++)
                    {
                        versions.Add(CString(elf, strings + (int)U32(elf, aux + 8)));
                        aux += (int)U32(elf, aux + 12);
                    }
                    entry += (int)U32(elf, entry + 12);
                }
            }
        }
        return new ElfVersionNeeds { NeededLibraries = libraries, Versions = versions };
    }

    private static ushort U16(byte[] data, int at) => BinaryPrimitives.ReadUInt16LittleEndian(data.AsSpan(at));

    private static uint U32(byte[] data, int at) => BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(at));

    private static ulong U64(byte[] data, int at) => BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(at));

    private static string CString(byte[] data, int at)
    {
        int end = Array.IndexOf(data, (byte)0, at);
        return Encoding.ASCII.GetString(data, at, end - at);
    }
}
