using System.Text.Json.Nodes;

namespace KataAgent.Testing;

/// <summary>
/// A Backend.AI service-definition app for test images: a small web server answering "GREETING on PORT", and its
/// definition in Backend.AI's format (a prestart write_tempfile whose path is referenced as {greeting}, the port as
/// {ports[0]}), installed as the service "web".
/// </summary>
public static class BackendAiWebApp
{
    public const string DefinitionPath = "/etc/backend.ai/service-defs/web.json";
    public const string ServerPath = "/opt/web/server.py";

    public const string Server = """
        import http.server, sys
        greeting = open(sys.argv[2]).read()
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = (greeting + ' on ' + sys.argv[1]).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass
        http.server.HTTPServer(('0.0.0.0', int(sys.argv[1])), Handler).serve_forever()
        """;

    public static string Definition(string greeting, string urlTemplate) => new JsonObject
    {
        ["command"] = new JsonArray("{runtime_path}", ServerPath, "{ports[0]}", "{greeting}"),
        ["url_template"] = urlTemplate,
        ["prestart_actions"] = new JsonArray(new JsonObject
        {
            ["action"] = "write_tempfile",
            ["args"] = new JsonObject { ["body"] = new JsonArray(greeting) },
            ["ref"] = "greeting",
        }),
    }.ToJsonString();

    /// <summary>The image files: the definition and its server.</summary>
    public static Dictionary<string, DerivedFile> Files(string greeting, string urlTemplate = "http://{host}:{port}/") => new()
    {
        [DefinitionPath] = DerivedFile.Text(Definition(greeting, urlTemplate)),
        [ServerPath] = DerivedFile.Text(Server),
    };
}
