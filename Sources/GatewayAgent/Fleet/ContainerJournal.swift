import Foundation
import GatewayProtocol
import LXD

/// Reads a vendor container's own journal, for the owner-approved live log relay.
public protocol ContainerJournal: Sendable {
    /// Entries after `cursor` (the last few when nil), oldest first, at most `limit`, and the cursor to
    /// continue from (entries beyond `limit` come on the next read, none is skipped).
    func read(container: String, after cursor: String?, limit: Int) async throws -> (lines: [String], cursor: String?)
}

/// Runs `journalctl` inside the vendor's own container through LXD (as the container's root, which
/// is an unprivileged user on the host). What it prints is the vendor's own data, bounded by `head`,
/// by the exec output cap and by the relay's rate limits; the gateway never reads the container's
/// files from the host.
public struct LXDContainerJournal: ContainerJournal {
    let lxd: LXDClient

    public init(lxd: LXDClient) { self.lxd = lxd }

    public func read(container: String, after cursor: String?, limit: Int) async throws -> (lines: [String], cursor: String?) {
        // JSON output carries each entry's cursor, so a read cut by `head` continues exactly where it stopped.
        let script = #"journalctl --no-pager --quiet -o json "$@" | head -n "$0""#
        let args = cursor.map { ["--after-cursor", $0] } ?? ["-n", String(limit)]
        let r = try await lxd.exec(container, ["sh", "-c", script, String(limit)] + args, timeout: .seconds(10), maxOutputBytes: 1024 * 1024)
        guard r.succeeded else {
            throw GatewayError(.fleet, "journalctl in \(container) exited \(r.exitCode): \(Fields.displayText(r.stderr, max: 200))")
        }
        return Self.parse(r.stdout, previous: cursor)
    }

    /// One line per entry (`time identifier: message`) and the last entry's cursor (the previous one
    /// when nothing new came). Entries that are not JSON objects are skipped.
    static func parse(_ output: String, previous: String?) -> (lines: [String], cursor: String?) {
        var lines: [String] = []
        var cursor = previous
        for raw in output.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let object = try? JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any] else { continue }
            if let c = object["__CURSOR"] as? String, !c.isEmpty, c.count <= 512,
               c.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f }) {
                cursor = c
            }
            let message: String
            switch object["MESSAGE"] {
            case let s as String: message = s
            case let bytes as [Int]: message = String(decoding: bytes.map { UInt8(truncatingIfNeeded: $0) }, as: UTF8.self)
            default: message = ""
            }
            let micros = (object["__REALTIME_TIMESTAMP"] as? String).flatMap(Double.init) ?? 0
            let time = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: micros / 1e6))
            let ident = object["SYSLOG_IDENTIFIER"] as? String ?? "-"
            lines.append("\(time) \(ident): \(message)")
        }
        return (lines, cursor)
    }
}
