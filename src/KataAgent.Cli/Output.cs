using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Spectre.Console;

namespace KataAgent.Cli;

/// <summary>Where the CLI writes: data to stdout, everything about it (progress, warnings, errors) to stderr.</summary>
internal static class Output
{
    public static readonly IAnsiConsole Err = AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(Console.Error),
        Interactive = Console.IsErrorRedirected ? InteractionSupport.No : InteractionSupport.Detect,
        Ansi = Console.IsErrorRedirected ? AnsiSupport.No : AnsiSupport.Detect,
    });

    public static readonly IAnsiConsole Out = CreateOut();

    private static IAnsiConsole CreateOut()
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Console.Out),
            Ansi = Console.IsOutputRedirected ? AnsiSupport.No : AnsiSupport.Detect,
        });
        // Piped tables should not wrap at 80 columns: grep and awk read them line by line.
        if (Console.IsOutputRedirected)
            console.Profile.Width = 250;
        return console;
    }

    private static readonly JsonFormatter ProtoJson = new(JsonFormatter.Settings.Default);

    public static void Warn(string message)
    {
        if (Console.IsErrorRedirected)
            Console.Error.WriteLine(message);
        else
            Err.MarkupLineInterpolated($"[yellow]{message}[/]");
    }

    public static void Info(string message) => Console.Error.WriteLine(message);

    /// <summary>A protobuf message as JSON (camelCase field names, defaults included) on stdout.</summary>
    public static void Json(IMessage message)
    {
        // proto3 JSON leaves out empty lists: put them back so that `.sessions[]` works on an empty listing.
        // Unset optional fields (exitCode of a running session) stay out, as they should.
        var node = JsonNode.Parse(ProtoJson.Format(message))!.AsObject();
        AddEmptyCollections(node, message.Descriptor);
        Console.Out.WriteLine(node.ToJsonString());
    }

    private static void AddEmptyCollections(JsonObject node, MessageDescriptor descriptor)
    {
        foreach (var field in descriptor.Fields.InDeclarationOrder())
        {
            var value = node[field.JsonName];
            if (value is null)
            {
                if (field.IsMap)
                    node[field.JsonName] = new JsonObject();
                else if (field.IsRepeated)
                    node[field.JsonName] = new JsonArray();
                continue;
            }
            if (field.FieldType != FieldType.Message || field.IsMap || field.MessageType.File.Package == "google.protobuf")
                continue;
            if (value is JsonArray items)
            {
                foreach (var item in items.OfType<JsonObject>())
                    AddEmptyCollections(item, field.MessageType);
            }
            else if (value is JsonObject child)
            {
                AddEmptyCollections(child, field.MessageType);
            }
        }
    }

    public static void Json<T>(T value)
    {
        // A proto message typed as itself binds here rather than to Json(IMessage): it still gets proto3 JSON.
        if (value is IMessage message)
        {
            Json(message);
            return;
        }
        Console.Out.WriteLine(JsonSerializer.Serialize(value, JsonOptions));
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = false, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>Runs <paramref name="work"/> with a spinner on a terminal; on a pipe, progress lines are dropped unless <paramref name="plainProgress"/>.</summary>
    public static async Task<T> WithStatusAsync<T>(string initial, Func<Action<string>, Task<T>> work, bool plainProgress = false)
    {
        if (Console.IsErrorRedirected)
            return await work(line => { if (plainProgress) Console.Error.WriteLine(line); });
        return await Err.Status().Spinner(Spinner.Known.Dots).StartAsync(Markup.Escape(initial), ctx =>
            work(line => ctx.Status(Markup.Escape(line))));
    }
}
