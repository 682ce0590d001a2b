import Foundation

/// Finds LXD's unix socket.
public enum LXDSocket {
    /// Candidates in order: `LXD_SOCKET`, `$LXD_DIR/unix.socket`, the snap path, Debian's path.
    public static func candidates(environment: [String: String]) -> [String] {
        var paths: [String] = []
        if let s = environment["LXD_SOCKET"], !s.isEmpty { paths.append(s) }
        if let d = environment["LXD_DIR"], !d.isEmpty { paths.append((d as NSString).appendingPathComponent("unix.socket")) }
        paths.append("/var/snap/lxd/common/lxd/unix.socket")
        paths.append("/var/lib/lxd/unix.socket")
        return paths
    }

    /// The first candidate that exists as a socket. An explicitly set `LXD_SOCKET` or `LXD_DIR` wins
    /// even if it does not exist yet, so a misconfiguration is reported rather than silently bypassed.
    public static func discover(environment: [String: String]) throws -> String {
        let all = candidates(environment: environment)
        if let s = environment["LXD_SOCKET"], !s.isEmpty { return s }
        if let d = environment["LXD_DIR"], !d.isEmpty { return (d as NSString).appendingPathComponent("unix.socket") }
        for path in all where isSocket(path) { return path }
        throw LXDError(code: .unreachable, message: "no LXD socket found (tried \(all.joined(separator: ", "))); is LXD running?")
    }

    /// Whether a process accepts connections on the socket: a cheap `connect(2)`, used to fail fast
    /// when LXD is down (AsyncHTTPClient's pool would otherwise retry until the request deadline).
    /// Returns nil when it does, else the errno.
    public static func probe(_ path: String) -> Int32? {
        switch connect(path) {
        case .success(let fd):
            close(fd)
            return nil
        case .failure(let e):
            return e.rawValue
        }
    }

    /// A connected, close-on-exec stream socket to `path`, or the errno of what failed.
    static func connect(_ path: String) -> Result<Int32, Errno> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(Errno(errno)) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            close(fd)
            return .failure(Errno(ENAMETOOLONG))
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in
            for (i, b) in bytes.enumerated() { buf[i] = b }
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            return .failure(Errno(e))
        }
        return .success(fd)
    }

    /// An errno, as a failure.
    struct Errno: Error {
        var rawValue: Int32
        init(_ rawValue: Int32) { self.rawValue = rawValue }
    }

    /// Whether `path` exists and is a unix socket.
    public static func isSocket(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK
    }
}
