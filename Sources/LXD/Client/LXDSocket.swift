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

    /// Whether `path` exists and is a unix socket.
    public static func isSocket(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK
    }
}
