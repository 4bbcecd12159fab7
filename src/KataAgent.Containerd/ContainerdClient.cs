using System.Net.Sockets;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using KataAgent.Containerd.Services;

namespace KataAgent.Containerd;

/// <summary>
/// Native gRPC client for containerd over its unix socket. Every call carries the
/// client's namespace (and lease, when one is attached) as metadata.
/// </summary>
public sealed class ContainerdClient : IDisposable
{
    public const string DefaultNamespace = "kata-agent";
    private const string NamespaceHeader = "containerd-namespace";
    private const string LeaseHeader = "containerd-lease";

    private readonly GrpcChannel _channel;
    private readonly bool _ownsChannel;

    private ContainerdClient(GrpcChannel channel, bool ownsChannel, string ns, string? leaseId, string address)
    {
        _channel = channel;
        _ownsChannel = ownsChannel;
        Namespace = ns;
        LeaseId = leaseId;
        Address = address;
        var invoker = channel.Intercept(new MetadataInterceptor(ns, leaseId));
        Version = new VersionService(invoker);
        Namespaces = new NamespacesService(invoker);
        Containers = new ContainersService(invoker);
        Tasks = new TasksService(invoker);
        Images = new ImagesService(invoker);
        Content = new ContentService(invoker);
        Snapshots = new SnapshotsService(invoker);
        Leases = new LeasesService(invoker);
        Diff = new DiffService(invoker);
        Events = new EventsService(invoker);
        Introspection = new IntrospectionService(invoker);
    }

    /// <summary>Connects lazily: the first call opens the socket.</summary>
    public static ContainerdClient Connect(string socketPath, string ns = DefaultNamespace)
    {
        ArgumentException.ThrowIfNullOrEmpty(socketPath);
        ArgumentException.ThrowIfNullOrEmpty(ns);
        if (socketPath.StartsWith("unix://", StringComparison.Ordinal))
            socketPath = socketPath["unix://".Length..];
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), ct).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
            EnableMultipleHttp2Connections = true,
            KeepAlivePingDelay = TimeSpan.FromSeconds(60),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(30),
        };
        var channel = GrpcChannel.ForAddress("http://containerd", new GrpcChannelOptions
        {
            HttpHandler = handler,
            MaxReceiveMessageSize = 64 * 1024 * 1024,
            MaxSendMessageSize = 64 * 1024 * 1024,
        });
        return new ContainerdClient(channel, ownsChannel: true, ns, leaseId: null, socketPath);
    }

    public string Namespace { get; }
    public string? LeaseId { get; }
    public string Address { get; }

    public VersionService Version { get; }
    public NamespacesService Namespaces { get; }
    public ContainersService Containers { get; }
    public TasksService Tasks { get; }
    public ImagesService Images { get; }
    public ContentService Content { get; }
    public SnapshotsService Snapshots { get; }
    public LeasesService Leases { get; }
    public DiffService Diff { get; }
    public EventsService Events { get; }
    public IntrospectionService Introspection { get; }

    /// <summary>A view of the same connection in another namespace.</summary>
    public ContainerdClient WithNamespace(string ns) => new(_channel, ownsChannel: false, ns, LeaseId, Address);

    /// <summary>A view whose calls run under a lease, so what they create is safe from GC until the lease goes.</summary>
    public ContainerdClient WithLease(string leaseId) => new(_channel, ownsChannel: false, Namespace, leaseId, Address);

    public void Dispose()
    {
        if (_ownsChannel)
            _channel.Dispose();
    }

    private sealed class MetadataInterceptor(string ns, string? leaseId) : Interceptor
    {
        private ClientInterceptorContext<TRequest, TResponse> Decorate<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context)
            where TRequest : class where TResponse : class
        {
            var headers = context.Options.Headers ?? new Metadata();
            headers.Add(NamespaceHeader, ns);
            if (leaseId is not null)
                headers.Add(LeaseHeader, leaseId);
            return new ClientInterceptorContext<TRequest, TResponse>(context.Method, context.Host, context.Options.WithHeaders(headers));
        }

        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request,
            ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation) =>
            continuation(request, Decorate(context));

        public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(TRequest request,
            ClientInterceptorContext<TRequest, TResponse> context, AsyncServerStreamingCallContinuation<TRequest, TResponse> continuation) =>
            continuation(request, Decorate(context));

        public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(
            ClientInterceptorContext<TRequest, TResponse> context, AsyncClientStreamingCallContinuation<TRequest, TResponse> continuation) =>
            continuation(Decorate(context));

        public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(
            ClientInterceptorContext<TRequest, TResponse> context, AsyncDuplexStreamingCallContinuation<TRequest, TResponse> continuation) =>
            continuation(Decorate(context));
    }
}
