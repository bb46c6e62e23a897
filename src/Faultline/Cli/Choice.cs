namespace Faultline.Cli;

/// <summary>One word of a fixed set and the value it stands for: prints as the word ("[default: user]" in help).</summary>
public readonly record struct Choice<T>(string Word, T Value)
{
    public override string ToString() => Word;
}
