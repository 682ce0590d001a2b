import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What the updater knows across runs. The floor (``highestAcceptedVersion``) only ever rises, so a
/// replayed older manifest is refused even after a rollback to an older build.
public struct HostState: Sendable, Codable, Equatable {
    /// The build running now (as far as the updater installed it); nil before its first update.
    public var installedVersion: String?
    /// The highest version whose manifest and artifacts were accepted (installed, or tried and rolled back).
    public var highestAcceptedVersion: String?
    /// The build kept at `<installPath>.previous`.
    public var previousVersion: String?
    /// Set while a version is being installed: a run that finds it set was interrupted (crash, power
    /// loss) between replacing the binary and the health check, and rolls back first.
    public var pendingVersion: String?

    public init(installedVersion: String? = nil, highestAcceptedVersion: String? = nil, previousVersion: String? = nil,
                pendingVersion: String? = nil) {
        self.installedVersion = installedVersion
        self.highestAcceptedVersion = highestAcceptedVersion
        self.previousVersion = previousVersion
        self.pendingVersion = pendingVersion
    }

    enum CodingKeys: String, CodingKey { case installedVersion, highestAcceptedVersion, previousVersion, pendingVersion }
}

/// How a run ended: written to `last-run.json` and mapped to the process's exit code.
public struct RunRecord: Sendable, Codable, Equatable {
    public enum Outcome: String, Sendable, Codable {
        /// Nothing newer than what is installed.
        case upToDate
        /// The new build is installed and answered its health check.
        case installed
        /// The manifest or an artifact was refused; nothing changed.
        case refused
        /// The new build failed (playbook or health check); the previous one is back and healthy.
        case rolledBack
        /// The served manifest is the version rolled back before: waiting for a newer one.
        case alreadyRolledBack
        /// The new build failed and the previous one could not be brought back healthy (or there was none).
        case rollbackFailed
        /// The run could not complete (server unreachable, another run busy); nothing changed.
        case failed
    }

    public var outcome: Outcome
    public var version: String?
    public var code: HostUpdateError.Code?
    public var message: String
    public var finishedAt: Date

    public init(outcome: Outcome, version: String?, code: HostUpdateError.Code? = nil, message: String, finishedAt: Date) {
        self.outcome = outcome
        self.version = version
        self.code = code
        self.message = message
        self.finishedAt = finishedAt
    }

    enum CodingKeys: String, CodingKey { case outcome, version, code, message, finishedAt }

    /// 0 installed or up to date; 2 refused; 3 rolled back; 4 rollback failed; 1 anything else.
    public var exitCode: Int32 {
        switch outcome {
        case .upToDate, .installed: 0
        case .failed: 1
        case .refused: 2
        case .rolledBack, .alreadyRolledBack: 3
        case .rollbackFailed: 4
        }
    }
}

/// The updater's files under its state directory, each written durably: temporary file, fsync,
/// rename over the old one, fsync of the directory. A state file that exists but does not decode
/// stops every update (fail closed): forgetting the floor would let an old manifest back in.
public struct StateStore: Sendable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    var statePath: String { directory + "/state.json" }
    var lastRunPath: String { directory + "/last-run.json" }
    /// Downloads and the unpacked playbook of the run in progress.
    public var workDirectory: String { directory + "/work" }
    /// `ansible-playbook`'s and the restart command's output of the last run.
    public var logPath: String { directory + "/last-run.log" }

    public func prepare() throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw HostUpdateError(.state, "cannot create \(directory): \(error)")
        }
    }

    public func load() throws -> HostState {
        guard let data = FileManager.default.contents(atPath: statePath) else {
            if FileManager.default.fileExists(atPath: statePath) { throw HostUpdateError(.state, "cannot read \(statePath)") }
            return HostState()
        }
        do { return try JSONDecoder().decode(HostState.self, from: data) } catch {
            throw HostUpdateError(.state, "\(statePath) is corrupt; no update until an operator fixes or removes it: \(error)")
        }
    }

    public func save(_ state: HostState) throws { try Self.writeDurably(try Self.encoder().encode(state), to: statePath) }

    public func lastRun() -> RunRecord? {
        FileManager.default.contents(atPath: lastRunPath).flatMap { try? Self.decoder().decode(RunRecord.self, from: $0) }
    }

    public func record(_ run: RunRecord) throws { try Self.writeDurably(try Self.encoder().encode(run), to: lastRunPath) }

    static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        e.dateEncodingStrategy = .iso8601
        return e
    }

    static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }

    /// Replaces `path` with `data` so that a crash at any point leaves either the old or the new file.
    public static func writeDurably(_ data: Data, to path: String, mode: mode_t = 0o600) throws {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw HostUpdateError(.state, "cannot create \(tmp): errno \(errno)") }
        var ok = data.withUnsafeBytes { buf -> Bool in
            var off = 0
            while off < buf.count {
                // Invariant: the loop runs only for a non-empty buffer, whose baseAddress is non-nil.
                let n = write(fd, buf.baseAddress! + off, buf.count - off)
                if n < 0 { if errno == EINTR { continue }; return false }
                off += n
            }
            return true
        }
        ok = ok && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            unlink(tmp)
            throw HostUpdateError(.state, "cannot write \(path): errno \(errno)")
        }
        try syncDirectory(of: path)
    }

    /// Makes a rename in `path`'s directory durable.
    public static func syncDirectory(of path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw HostUpdateError(.state, "cannot open \(dir): errno \(errno)") }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw HostUpdateError(.state, "cannot sync \(dir): errno \(errno)") }
    }

    /// An exclusive lock on the state directory for this process's run; nil when another run holds it.
    public func lock() throws -> RunLock? {
        let path = directory + "/lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw HostUpdateError(.state, "cannot open \(path): errno \(errno)") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        return RunLock(fd: fd)
    }
}

/// Held for a run; released on ``release()`` (or by the kernel when the process ends).
public final class RunLock: Sendable {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    public func release() { close(fd) }
}
