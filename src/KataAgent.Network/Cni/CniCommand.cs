namespace KataAgent.Network;

public enum CniCommand
{
    Add,
    Del,
    Check,
    Version,
}

internal static class CniCommandNames
{
    public static string ToEnvironmentValue(this CniCommand command) => command switch
    {
        CniCommand.Add => "ADD",
        CniCommand.Del => "DEL",
        CniCommand.Check => "CHECK",
        CniCommand.Version => "VERSION",
        _ => throw new ArgumentOutOfRangeException(nameof(command), command, null),
    };
}
