import Foundation
import GatewayProtocol
import LXD

/// Reads a vendor container's own journal, for the owner-approved live log relay.
public protocol ContainerJournal: Sendable {
    /// Entries after `cursor` (the last few when nil), at most `limit`, and the cursor to continue from.
    func read(container: String, after cursor: String?, limit: Int) async throws -> (lines: [String], cursor: String?)
}

/// Runs `journalctl` inside the vendor's own container through LXD (as the container's root, which
/// is an unprivileged user on the host). What it prints is the vendor's own data, bounded by `-n`, by
/// the exec output cap and by the relay's rate limits; the gateway never reads the container's files
/// from the host.
public struct LXDContainerJournal: ContainerJournal {
    let lxd: LXDClient

    public init(lxd: LXDClient) { self.lxd = lxd }

    static let cursorMark = "-- cursor: "

    public func read(container: String, after cursor: String?, limit: Int) async throws -> (lines: [String], cursor: String?) {
        var cmd = ["journalctl", "--no-pager", "--quiet", "-o", "short-iso", "--show-cursor", "-n", String(limit)]
        if let cursor { cmd += ["--after-cursor", cursor] }
        let r = try await lxd.exec(container, cmd, timeout: .seconds(10), maxOutputBytes: 512 * 1024)
        guard r.succeeded else {
            throw GatewayError(.fleet, "journalctl in \(container) exited \(r.exitCode): \(Fields.displayText(r.stderr, max: 200))")
        }
        return Self.parse(r.stdout, previous: cursor)
    }

    /// Lines, and the cursor `--show-cursor` prints last (kept from before when there was nothing new).
    static func parse(_ output: String, previous: String?) -> (lines: [String], cursor: String?) {
        var lines: [String] = []
        var cursor = previous
        for line in output.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix(cursorMark) {
                let c = String(line.dropFirst(cursorMark.count))
                // A cursor is printable ASCII without spaces; anything else is not passed back to journalctl.
                if !c.isEmpty, c.count <= 512, c.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f }) { cursor = c }
            } else {
                lines.append(String(line))
            }
        }
        return (lines, cursor)
    }
}
