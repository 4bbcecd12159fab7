#:project ../tests/KataAgent.Testing/KataAgent.Testing.csproj
// Writes the OCI archive of a Backend.AI-labelled demo image: the python base image (built by the project's
// BaseImageBuilder, cached) plus one layer with a service definition and its web server, built with the same
// DerivedImages code the tests use. Import it with `kata-agent image import ARCHIVE --name NAME`.
//
//   dotnet run scripts/backendai-demo-image.cs -- /tmp/demo16/backendai-demo.oci.tar demo/backendai:1
using KataAgent.Testing;

if (args.Length != 2)
{
    await Console.Error.WriteLineAsync("usage: dotnet run scripts/backendai-demo-image.cs -- ARCHIVE NAME").ConfigureAwait(false);
    return 2;
}
var (archivePath, name) = (Path.GetFullPath(args[0]), args[1]);

var spec = new DerivedImageSpec
{
    Name = name,
    Files = BackendAiWebApp.Files("hello from the web service def"),
    Labels = new Dictionary<string, string?>
    {
        ["ai.backend.runtime-type"] = "python",
        ["ai.backend.runtime-path"] = "/usr/bin/python3",
        ["ai.backend.service-ports"] = "web:http:8080",
        ["ai.backend.features"] = "query batch uid-match user-input",
        ["ai.backend.resource.min.mem"] = "256m",
    },
};

var baseImage = await TestImages.BuildPythonAsync().ConfigureAwait(false);
var work = Directory.CreateTempSubdirectory("kata-demo-image-");
try
{
    Directory.CreateDirectory(Path.GetDirectoryName(archivePath)!);
    await DerivedImages.WriteArchiveAsync(baseImage.ArchivePath, spec, work.FullName, archivePath).ConfigureAwait(false);
}
finally
{
    work.Delete(recursive: true);
}
Console.WriteLine($"{archivePath}: {name} ({new FileInfo(archivePath).Length} bytes; base {baseImage.ArchivePath})");
return 0;
