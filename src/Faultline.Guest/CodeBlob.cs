using Iced.Intel;

namespace Faultline.Guest;

/// <summary>Assembles Iced code at a fixed guest address and resolves label addresses.</summary>
internal static class CodeBlob
{
    public static (byte[] Bytes, AssemblerResult Result) Assemble(Assembler a, ulong rip)
    {
        using var ms = new MemoryStream();
        var result = a.Assemble(new StreamCodeWriter(ms), rip, BlockEncoderOptions.ReturnNewInstructionOffsets);
        return (ms.ToArray(), result);
    }
}
