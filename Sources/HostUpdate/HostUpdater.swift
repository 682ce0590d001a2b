import AsyncHTTPClient
import Foundation
import GatewayProtocol
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// One update run, as the timer starts it:
/// 1. fetch the signed manifest; verify signature (exact bytes, domain-tagged), schema and expiry;
/// 2. its version must be newer than the installed one and never below the highest accepted before;
/// 3. download the client binary and the playbook archive, each checked against the manifest's SHA-256;
/// 4. unpack the playbook under the archive rules; persist the new floor (fsync + rename);
/// 5. keep the installed binary at `<installPath>.previous`; run the playbook with `ansible-playbook -c local`;
/// 6. restart the agent and wait for its control socket's health check; if it does not pass in time,
///    put the previous binary back, restart, and check again.
/// Nothing here needs the agent to be up: a crashed or wedged agent is updated or rolled back the same way.
/// Every refusal happens before step 4, so a refused manifest changes nothing but `last-run.json`.
public struct HostUpdater: Sendable {
    public let config: HostctlConfig
    public let store: StateStore
    let fetcher: Fetcher
    let health: HealthCheck
    let archive = PlaybookArchive()
    let logger: Logger
    let now: @Sendable () -> Date

    public init(config: HostctlConfig, http: HTTPClient, logger: Logger, now: @escaping @Sendable () -> Date = { Date() }) {
        self.config = config
        store = StateStore(directory: config.stateDirectory)
        fetcher = Fetcher(http: http, allowInsecureHTTP: config.allowInsecureHTTP)
        health = HealthCheck(socketPath: config.controlSocket, http: http)
        self.logger = logger
        self.now = now
    }

    var previousPath: String { config.installPath + ".previous" }

    /// Runs once and records the outcome in `last-run.json` (and the log).
    public func run() async -> RunRecord {
        let record: RunRecord
        do {
            try store.prepare()
            if let lock = try store.lock() {
                defer { lock.release() }
                record = await runLocked()
            } else {
                record = RunRecord(outcome: .failed, version: nil, code: .busy, message: "another update run holds the lock", finishedAt: now())
            }
        } catch let e as HostUpdateError {
            record = RunRecord(outcome: .failed, version: nil, code: e.code, message: e.message, finishedAt: now())
        } catch {
            record = RunRecord(outcome: .failed, version: nil, code: .state, message: "\(error)", finishedAt: now())
        }
        do { try store.record(record) } catch {
            logger.error("cannot record the run", metadata: ["hostctl.error": "\(error)"])
        }
        let meta: Logger.Metadata = ["hostctl.outcome": "\(record.outcome.rawValue)", "hostctl.version": "\(record.version ?? "-")",
                                     "hostctl.code": "\(record.code?.rawValue ?? "-")", "hostctl.message": "\(record.message)"]
        switch record.outcome {
        case .upToDate: logger.info("up to date", metadata: meta)
        case .installed: logger.notice("update installed", metadata: meta)
        case .refused: logger.error("update refused", metadata: meta)
        case .rolledBack, .alreadyRolledBack: logger.error("update rolled back", metadata: meta)
        case .rollbackFailed: logger.critical("rollback failed", metadata: meta)
        case .failed: logger.error("update run failed", metadata: meta)
        }
        return record
    }

    func runLocked() async -> RunRecord {
        var state: HostState
        do { state = try store.load() } catch let e as HostUpdateError {
            return RunRecord(outcome: .failed, version: nil, code: e.code, message: e.message, finishedAt: now())
        } catch {
            return RunRecord(outcome: .failed, version: nil, code: .state, message: "\(error)", finishedAt: now())
        }
        if let pending = state.pendingVersion {
            // An earlier run stopped between replacing the binary and its verdict: that build is not trusted.
            let record = await rollback(version: pending, hasPrevious: FileManager.default.fileExists(atPath: previousPath),
                                        reason: "the update to \(pending) was interrupted before its health check")
            return finish(record, state: &state)
        }
        let manifest: HostManifest
        let manifestURL: URL
        do {
            manifestURL = try URLPolicy(allowInsecureHTTP: config.allowInsecureHTTP).check(config.manifestURL, relativeTo: nil)
            let verifier = ManifestVerifier(publicKey: try config.key(), maxClientBytes: config.maxClientBytes,
                                            maxPlaybookBytes: config.maxPlaybookBytes)
            manifest = try verifier.verify(envelope: try await fetcher.manifest(manifestURL), now: now())
        } catch let e as HostUpdateError {
            return refusedOrFailed(e, version: nil)
        } catch {
            return RunRecord(outcome: .failed, version: nil, message: "\(error)", finishedAt: now())
        }
        let version = manifest.version
        logger.debug("manifest verified", metadata: ["hostctl.version": "\(version)"])

        // Invariant: the verifier accepted only a parsable version.
        let v = HostVersion(version)!
        let installed = (state.installedVersion ?? config.initialVersion).flatMap(HostVersion.init)
        let floor = state.highestAcceptedVersion.flatMap(HostVersion.init)
        if let installed, v == installed {
            return RunRecord(outcome: .upToDate, version: version, message: "\(version) is installed", finishedAt: now())
        }
        if let floor, v == floor {
            return RunRecord(outcome: .alreadyRolledBack, version: version,
                             message: "\(version) was installed before and rolled back; waiting for a newer manifest", finishedAt: now())
        }
        if let bound = [installed, floor].compactMap({ $0 }).max(), v < bound {
            return RunRecord(outcome: .refused, version: version, code: .replay,
                             message: "manifest version \(version) is older than \(bound) accepted before (a replayed manifest?)", finishedAt: now())
        }

        // Download and check everything before changing anything.
        let work = store.workDirectory
        let clientFile = work + "/iot-gateway-client"
        let playbookDir = work + "/playbook"
        do {
            try? FileManager.default.removeItem(atPath: work)
            guard mkdir(work, 0o700) == 0 else { throw HostUpdateError(.io, "cannot create \(work): errno \(errno)") }
            try await fetcher.download(manifest.client, relativeTo: manifestURL, to: clientFile)
            try await fetcher.download(manifest.playbook, relativeTo: manifestURL, to: work + "/playbook.archive")
            let tar = try await archive.tarBytes(file: work + "/playbook.archive")
            let entries = try archive.unpack(tar: tar, into: playbookDir)
            guard entries.contains(where: { $0.path == "site.yml" && $0.kind == .file }) else {
                throw HostUpdateError(.unsafeArchive, "the playbook archive has no site.yml at its top")
            }
        } catch let e as HostUpdateError {
            try? FileManager.default.removeItem(atPath: work)
            return refusedOrFailed(e, version: version)
        } catch {
            try? FileManager.default.removeItem(atPath: work)
            return RunRecord(outcome: .failed, version: version, message: "\(error)", finishedAt: now())
        }

        // Accepted: the floor rises before anything is installed, so this manifest never applies twice.
        let hasPrevious: Bool
        do {
            state.highestAcceptedVersion = version
            state.pendingVersion = version
            try store.save(state)
            FileManager.default.createFile(atPath: store.logPath, contents: nil, attributes: [.posixPermissions: 0o600])
            hasPrevious = FileManager.default.fileExists(atPath: config.installPath)
            if hasPrevious {
                try Self.copyDurably(from: config.installPath, to: previousPath)
                state.previousVersion = state.installedVersion
                try store.save(state)
            }
        } catch let e as HostUpdateError {
            return RunRecord(outcome: .failed, version: version, code: e.code, message: e.message, finishedAt: now())
        } catch {
            return RunRecord(outcome: .failed, version: version, code: .io, message: "\(error)", finishedAt: now())
        }
        logger.notice("installing", metadata: ["hostctl.version": "\(version)", "hostctl.previous": "\(state.installedVersion ?? "-")"])

        var failure: String? = nil
        do {
            try await applyPlaybook(manifest, playbookDir: playbookDir, clientFile: clientFile)
            if let why = await restartAndCheck() { failure = "the new build is not healthy: \(why)" }
        } catch let e as HostUpdateError {
            failure = e.message
        } catch {
            failure = "\(error)"
        }
        try? FileManager.default.removeItem(atPath: work)
        if let failure {
            return finish(await rollback(version: version, hasPrevious: hasPrevious, reason: failure), state: &state)
        }
        state.installedVersion = version
        return finish(RunRecord(outcome: .installed, version: version, message: "\(version) is installed and healthy", finishedAt: now()),
                      state: &state)
    }

    /// Clears the pending mark (and saves what changed) once an install or rollback has its verdict.
    func finish(_ record: RunRecord, state: inout HostState) -> RunRecord {
        state.pendingVersion = nil
        do { try store.save(state) } catch {
            return RunRecord(outcome: .failed, version: record.version, code: .state,
                             message: "\(record.message), but the state file could not be written: \(error)", finishedAt: now())
        }
        return record
    }

    func refusedOrFailed(_ e: HostUpdateError, version: String?) -> RunRecord {
        let outcome: RunRecord.Outcome = switch e.code {
        case .download, .busy, .state, .io, .config, .playbook, .restart: .failed
        case .insecureURL, .malformed, .badSignature, .expired, .replay, .digestMismatch, .tooLarge, .unsafeArchive: .refused
        }
        return RunRecord(outcome: outcome, version: version, code: e.code, message: e.message, finishedAt: now())
    }

    /// Runs the manifest's playbook locally; it must leave exactly the manifest's binary at `installPath`.
    func applyPlaybook(_ manifest: HostManifest, playbookDir: String, clientFile: String) async throws {
        guard let ansible = Subprocess.resolve(config.ansiblePlaybook) else {
            throw HostUpdateError(.playbook, "\(config.ansiblePlaybook) is not installed (Debian: apt-get install ansible-core)")
        }
        let vars: [String: String] = ["iotgw_version": manifest.version, "iotgw_client_artifact": clientFile,
                                      "iotgw_install_path": config.installPath, "iotgw_client_sha256": manifest.client.sha256]
        let varsFile = store.workDirectory + "/vars.json"
        try StateStore.writeDurably(try JSONEncoder().encode(vars), to: varsFile)
        let tmp = store.workDirectory + "/.ansible"
        let env = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "LC_ALL": "C.UTF-8", "HOME": store.workDirectory, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
                   "ANSIBLE_LOCAL_TEMP": tmp, "ANSIBLE_REMOTE_TEMP": tmp, "ANSIBLE_RETRY_FILES_ENABLED": "0"]
        // site.yml by its path, not from the playbook's directory as the working directory: an ansible.cfg in
        // the archive is not read.
        let r = try await Subprocess.run(ansible, ["-c", "local", "-i", "localhost,", "-e", "@" + varsFile, playbookDir + "/site.yml"],
                                         environment: env, output: .file(store.logPath),
                                         timeout: .seconds(Int64(config.playbookTimeoutSeconds)))
        guard r.status == 0, !r.timedOut else {
            throw HostUpdateError(.playbook, "ansible-playbook \(r.timedOut ? "timed out" : "failed with exit \(r.status)") (see \(store.logPath))")
        }
        let installed = try? Data(contentsOf: URL(fileURLWithPath: config.installPath))
        guard let installed, Keys.sha256Hex(installed) == manifest.client.sha256 else {
            throw HostUpdateError(.playbook, "the playbook succeeded but \(config.installPath) is not the manifest's binary")
        }
    }

    /// Restarts the agent and waits for its health check; nil when healthy, else why not. The control
    /// socket is unlinked first, so only an agent started after this point can answer (a wedged old one
    /// that survived the restart still listens on the unlinked socket and cannot pass).
    func restartAndCheck() async -> String? {
        if unlink(config.controlSocket) != 0 && errno != ENOENT {
            logger.warning("cannot remove the control socket before the restart",
                           metadata: ["hostctl.socket": "\(config.controlSocket)", "hostctl.errno": "\(errno)"])
        }
        guard let exe = config.restartCommand.first.flatMap(Subprocess.resolve) else {
            return "the restart command \(config.restartCommand.first ?? "") is not installed"
        }
        do {
            let r = try await Subprocess.run(exe, Array(config.restartCommand.dropFirst()), output: .file(store.logPath), timeout: .seconds(180))
            guard r.status == 0, !r.timedOut else { return "the restart command \(r.timedOut ? "timed out" : "exited \(r.status)")" }
        } catch {
            return "the restart command did not run: \(error)"
        }
        return await health.waitHealthy(within: .milliseconds(Int64(config.healthTimeoutSeconds * 1000)))
    }

    /// Puts the previous binary back and restarts it. The floor stays raised: the failed version is never retried.
    func rollback(version: String, hasPrevious: Bool, reason: String) async -> RunRecord {
        logger.error("rolling back", metadata: ["hostctl.version": "\(version)", "hostctl.reason": "\(reason)"])
        guard hasPrevious else {
            return RunRecord(outcome: .rollbackFailed, version: version, code: .io,
                             message: "\(reason); there is no previous build to roll back to", finishedAt: now())
        }
        do { try Self.copyDurably(from: previousPath, to: config.installPath) } catch {
            return RunRecord(outcome: .rollbackFailed, version: version, code: .io,
                             message: "\(reason); restoring \(previousPath) failed: \(error)", finishedAt: now())
        }
        if let why = await restartAndCheck() {
            return RunRecord(outcome: .rollbackFailed, version: version, code: .restart,
                             message: "\(reason); the previous build is back but not healthy: \(why)", finishedAt: now())
        }
        return RunRecord(outcome: .rolledBack, version: version, message: "\(reason); rolled back to the previous build", finishedAt: now())
    }

    /// Copies `from` over `to` (mode 0755) so that `to` is at every moment either the old or the new file.
    public static func copyDurably(from: String, to: String) throws {
        let tmp = to + ".hostctl-tmp"
        let src = open(from, O_RDONLY | O_CLOEXEC)
        guard src >= 0 else { throw HostUpdateError(.io, "cannot open \(from): errno \(errno)") }
        defer { close(src) }
        unlink(tmp)
        let dst = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o755)
        guard dst >= 0 else { throw HostUpdateError(.io, "cannot create \(tmp): errno \(errno)") }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var ok = true
        while ok {
            let n = read(src, &buffer, buffer.count)
            if n == 0 { break }
            if n < 0 { if errno == EINTR { continue }; ok = false; break }
            var off = 0
            while off < n {
                let w = buffer.withUnsafeBytes { write(dst, $0.baseAddress! + off, n - off) }  // Invariant: buffer is 1 MiB, never empty.
                if w < 0 { if errno == EINTR { continue }; ok = false; break }
                off += w
            }
        }
        ok = ok && fchmod(dst, 0o755) == 0 && fsync(dst) == 0
        close(dst)
        guard ok, rename(tmp, to) == 0 else {
            unlink(tmp)
            throw HostUpdateError(.io, "cannot copy \(from) to \(to): errno \(errno)")
        }
        try StateStore.syncDirectory(of: to)
    }
}
