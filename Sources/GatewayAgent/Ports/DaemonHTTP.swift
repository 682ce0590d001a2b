import AsyncHTTPClient
import NIOCore

/// What the daemon's HTTP clients share: vendors get ``VendorClient/httpConfiguration``, LXD's unix
/// socket ``lxd``, each its own client, so that a vendor's slow server never holds LXD's connections.
public enum DaemonHTTP {
    /// How long the daemon's HTTP clients keep an unused connection (AsyncHTTPClient's default: 60 s).
    /// Shorter than an idle spell (`memory.idleTrimSeconds`, 5 s), so connections a burst of work left
    /// open are closed before the idle trim, not a minute into idling: closing ran code (the pool's idle
    /// timer, NIO's close path) that brought 1.9 MB back after the trim. A burst reuses its connections;
    /// polls minutes apart never could.
    public static let pooledConnectionIdle: TimeAmount = .seconds(3)

    /// The client to LXD's unix socket: AsyncHTTPClient's defaults, with connections closed after
    /// ``pooledConnectionIdle``.
    public static var lxd: HTTPClient.Configuration {
        var c = HTTPClient.Configuration()
        c.connectionPool.idleTimeout = pooledConnectionIdle
        return c
    }
}
