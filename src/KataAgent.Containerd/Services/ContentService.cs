using Containerd.Services.Content.V1;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;

namespace KataAgent.Containerd.Services;

public sealed record ContentInfo(string Digest, long Size, IReadOnlyDictionary<string, string> Labels);

public sealed class ContentService(CallInvoker invoker)
{
    private const int ChunkSize = 1 << 20;
    private readonly Content.ContentClient _client = new(invoker);

    public Task<ContentInfo> InfoAsync(string digest, CancellationToken cancellationToken = default) =>
        Rpc.Call($"content.info {digest}", async () =>
            ToInfo((await _client.InfoAsync(new InfoRequest { Digest = digest }, cancellationToken: cancellationToken)).Info));

    public async Task<ContentInfo?> FindAsync(string digest, CancellationToken cancellationToken = default)
    {
        try
        {
            return await InfoAsync(digest, cancellationToken).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
            return null;
        }
    }

    public async Task<IReadOnlyList<ContentInfo>> ListAsync(CancellationToken cancellationToken = default, params string[] filters)
    {
        var request = new ListContentRequest();
        request.Filters.Add(filters);
        var result = new List<ContentInfo>();
        await foreach (var page in Rpc.Stream("content.list", _client.List(request, cancellationToken: cancellationToken), cancellationToken).ConfigureAwait(false))
            result.AddRange(page.Info.Select(ToInfo));
        return result;
    }

    /// <summary>Replaces the labels of a blob (e.g. the GC references that keep its children alive).</summary>
    public Task<ContentInfo> SetLabelsAsync(string digest, IReadOnlyDictionary<string, string> labels, CancellationToken cancellationToken = default) =>
        Rpc.Call($"content.update {digest}", async () =>
        {
            var info = new Info { Digest = digest };
            info.Labels.Add(labels);
            var request = new UpdateRequest { Info = info, UpdateMask = new FieldMask { Paths = { labels.Keys.Select(k => "labels." + k) } } };
            return ToInfo((await _client.UpdateAsync(request, cancellationToken: cancellationToken)).Info);
        });

    public Task DeleteAsync(string digest, CancellationToken cancellationToken = default) =>
        Rpc.Call($"content.delete {digest}", async () =>
            await _client.DeleteAsync(new DeleteContentRequest { Digest = digest }, cancellationToken: cancellationToken));

    /// <summary>Streams a blob's bytes (or a range of them) to the destination.</summary>
    public async Task ReadAsync(string digest, Stream destination, long offset = 0, long size = 0, CancellationToken cancellationToken = default)
    {
        var call = _client.Read(new ReadContentRequest { Digest = digest, Offset = offset, Size = size }, cancellationToken: cancellationToken);
        await foreach (var chunk in Rpc.Stream($"content.read {digest}", call, cancellationToken).ConfigureAwait(false))
            await destination.WriteAsync(chunk.Data.Memory, cancellationToken).ConfigureAwait(false);
    }

    public async Task<byte[]> ReadAllAsync(string digest, CancellationToken cancellationToken = default)
    {
        using var buffer = new MemoryStream();
        await ReadAsync(digest, buffer, cancellationToken: cancellationToken).ConfigureAwait(false);
        return buffer.ToArray();
    }

    /// <summary>Progress of an unfinished write (an ingest), or null when there is none.</summary>
    public async Task<global::Containerd.Services.Content.V1.Status?> StatusAsync(string reference, CancellationToken cancellationToken = default)
    {
        try
        {
            return await Rpc.Call($"content.status {reference}", async () =>
                (await _client.StatusAsync(new StatusRequest { Ref = reference }, cancellationToken: cancellationToken)).Status).ConfigureAwait(false);
        }
        catch (ContainerdNotFoundException)
        {
            return null;
        }
    }

    public Task AbortAsync(string reference, CancellationToken cancellationToken = default) =>
        Rpc.Call($"content.abort {reference}", async () =>
            await _client.AbortAsync(new AbortRequest { Ref = reference }, cancellationToken: cancellationToken));

    /// <summary>
    /// Writes a blob under an ingest reference and commits it against its expected digest.
    /// A write interrupted earlier under the same reference resumes where it stopped when
    /// the source can seek; a blob that already exists is not written again.
    /// </summary>
    /// <returns>True when bytes were written, false when the blob was already present.</returns>
    public async Task<bool> WriteAsync(string reference, Stream source, long total, string expectedDigest,
        IReadOnlyDictionary<string, string>? labels = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(reference);
        ArgumentException.ThrowIfNullOrEmpty(expectedDigest);
        if (await FindAsync(expectedDigest, cancellationToken).ConfigureAwait(false) is not null)
            return false;

        var operation = $"content.write {expectedDigest}";
        try
        {
            using var call = _client.Write(cancellationToken: cancellationToken);
            var responses = call.ResponseStream;

            await call.RequestStream.WriteAsync(new WriteContentRequest
            {
                Action = WriteAction.Stat, Ref = reference, Total = total, Expected = expectedDigest,
            }, cancellationToken).ConfigureAwait(false);
            if (!await responses.MoveNext(cancellationToken).ConfigureAwait(false))
                throw new ContainerdException(operation, StatusCode.Internal, "write stream closed before stat");
            var offset = responses.Current.Offset;
            if (offset > total)
                offset = 0;
            if (offset > 0)
            {
                if (source.CanSeek)
                    source.Seek(offset, SeekOrigin.Current);
                else
                    await SkipAsync(source, offset, cancellationToken).ConfigureAwait(false);
            }

            var buffer = new byte[ChunkSize];
            while (true)
            {
                var read = await source.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
                if (read == 0)
                    break;
                await call.RequestStream.WriteAsync(new WriteContentRequest
                {
                    Action = WriteAction.Write, Ref = reference, Offset = offset, Data = ByteString.CopyFrom(buffer, 0, read),
                }, cancellationToken).ConfigureAwait(false);
                if (!await responses.MoveNext(cancellationToken).ConfigureAwait(false))
                    throw new ContainerdException(operation, StatusCode.Internal, "write stream closed mid-blob");
                offset += read;
            }

            var commit = new WriteContentRequest { Action = WriteAction.Commit, Ref = reference, Offset = offset, Total = total, Expected = expectedDigest };
            if (labels is not null)
                commit.Labels.Add(labels);
            await call.RequestStream.WriteAsync(commit, cancellationToken).ConfigureAwait(false);
            if (!await responses.MoveNext(cancellationToken).ConfigureAwait(false))
                throw new ContainerdException(operation, StatusCode.Internal, "write stream closed before commit answered");
            await call.RequestStream.CompleteAsync().ConfigureAwait(false);
            return true;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.AlreadyExists)
        {
            return false;
        }
        catch (RpcException e) when (e.StatusCode != StatusCode.Cancelled)
        {
            throw Rpc.Translate(operation, e);
        }
    }

    private static async Task SkipAsync(Stream source, long count, CancellationToken cancellationToken)
    {
        var buffer = new byte[Math.Min(count, ChunkSize)];
        while (count > 0)
        {
            var read = await source.ReadAsync(buffer.AsMemory(0, (int)Math.Min(count, buffer.Length)), cancellationToken).ConfigureAwait(false);
            if (read == 0)
                throw new EndOfStreamException("source ended before the resume offset");
            count -= read;
        }
    }

    private static ContentInfo ToInfo(Info info) => new(info.Digest, info.Size, new Dictionary<string, string>(info.Labels));
}
