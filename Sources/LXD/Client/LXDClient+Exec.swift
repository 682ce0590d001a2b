import Foundation
import NIOCore

/// What a command run with `exec` produced.
public struct ExecResult: Sendable, Equatable {
    public var exitCode: Int
    public var stdout: String
    public var stderr: String

    public var succeeded: Bool { exitCode == 0 }
}

/// `POST /1.0/instances/<name>/exec` body (`definitions.InstanceExecPost`), the form without websockets.
struct InstanceExecPost: Encodable {
    var command: [String]
    var environment: [String: String]
    var interactive = false
    var waitForWebsocket = false
    var recordOutput = true
    var user: UInt32?
    var group: UInt32?
    var cwd: String?

    enum CodingKeys: String, CodingKey {
        case command, environment, interactive, user, group, cwd
        case waitForWebsocket = "wait-for-websocket"
        case recordOutput = "record-output"
    }
}

extension LXDClient {
    /// Runs a command in a running instance and returns its exit code and output.
    ///
    /// A non-zero exit is a result, not an error, except 127 and 126, which LXD 5.0 reports as
    /// "Command not found" and "Command not executable": those throw `.commandNotFound` and
    /// `.commandNotExecutable`.
    ///
    /// The output is written to two files inside the instance and read back (at most
    /// `maxOutputBytes` each), then deleted; the instance needs `/bin/sh` and a writable `/var/tmp`. It is
    /// never written where LXD's `record-output` puts it: that hands the command an open file in LXD's
    /// log directory on the host's disk, outside any quota of the instance, which a process the command
    /// leaves behind (or any root process in the instance, through `/proc/PID/fd/1`) can go on
    /// writing to without end. `outputOnHost: true` asks for that form all the same, for instances the
    /// caller trusts (the logs are deleted after reading; paths come from the operation metadata, as
    /// they moved in LXD 5.15).
    ///
    /// With `captureOutput: false` the command's output goes to `/dev/null` and only the exit code comes
    /// back (2 requests instead of 6).
    public func exec(_ instance: String, _ command: [String], environment: [String: String] = [:],
                     user: UInt32? = nil, group: UInt32? = nil, cwd: String? = nil,
                     timeout: Duration? = nil, maxOutputBytes: Int = 16 * 1024 * 1024,
                     captureOutput: Bool = true, outputOnHost: Bool = false) async throws -> ExecResult {
        try LXDName.validateInstance(instance)
        guard !command.isEmpty else { throw LXDError(code: .invalidArgument, message: "exec needs a command") }
        let files = captureOutput && !outputOnHost ? Self.execOutputFiles() : nil
        var body = InstanceExecPost(command: files.map { Self.capturing(command, stdout: $0.stdout, stderr: $0.stderr) } ?? command,
                                    environment: environment, user: user, group: group, cwd: cwd)
        body.recordOutput = captureOutput && outputOnHost
        let op = try await asyncOperation(.POST, Self.instancePath(instance) + "/exec", headers: Self.jsonHeaders,
                                          body: try Self.jsonBody(body), timeout: timeout)
        var stdout = "", stderr = ""
        if let files {
            (stdout, stderr) = try await readExecOutput(instance, files, limit: maxOutputBytes)
        } else if body.recordOutput {
            let out = op.metadata?["output"]
            stdout = try await fetchExecLog(out?["1"]?.stringValue, limit: maxOutputBytes)
            stderr = try await fetchExecLog(out?["2"]?.stringValue, limit: maxOutputBytes)
        }
        do {
            _ = try Self.finished(op)
        } catch let e as LXDError where e.code == .operationFailed {
            throw Self.execFailure(e, command: command)
        }
        guard let code = op.metadata?["return"]?.intValue else {
            throw LXDError(code: .invalidResponse, message: "exec operation has no return code")
        }
        // The shell that captures the output reports what LXD would have: a command it cannot start.
        if files != nil, code == 127 || code == 126 {
            throw Self.execFailure(LXDError(code: .operationFailed, message: code == 127 ? "Command not found" : "Command not executable"),
                                   command: command)
        }
        return ExecResult(exitCode: code, stdout: stdout, stderr: stderr)
    }

    /// Two fresh names in the instance's `/var/tmp` (on its own disk, within its quota). Not `/tmp`:
    /// Debian's systemd empties it early in every boot (`D /tmp` in `tmpfiles.d/tmp.conf`), so a command
    /// run just after a restart lost its output when the wipe came after the shell had made its files.
    static func execOutputFiles() -> (stdout: String, stderr: String) {
        let token = UUID().uuidString.lowercased()
        return ("/var/tmp/.iotgw-exec-\(token).out", "/var/tmp/.iotgw-exec-\(token).err")
    }

    /// `command` run by a shell that sends its output to the two files (made readable by their owner
    /// only, in a subshell, so that the command keeps the umask it would have had) and then becomes the
    /// command, so that its exit code and signals are the command's own.
    static func capturing(_ command: [String], stdout: String, stderr: String) -> [String] {
        ["/bin/sh", "-c", #"o=$1 e=$2; shift 2; (umask 077; : >"$o"; : >"$e"); exec "$@" >"$o" 2>"$e""#, "sh", stdout, stderr] + command
    }

    /// Reads the captured output back and deletes the files, whatever the reading did.
    func readExecOutput(_ instance: String, _ files: (stdout: String, stderr: String), limit: Int) async throws -> (String, String) {
        func read(_ path: String) async throws -> String {
            do {
                return String(buffer: try await pull(instance, path: path, maxBytes: limit).content)
            } catch let e as LXDError where e.code == .notFound {
                return ""  // the shell never got to make it (no /var/tmp, or it could not start)
            }
        }
        let result: Result<(String, String), any Error>
        do { result = .success((try await read(files.stdout), try await read(files.stderr))) } catch { result = .failure(error) }
        for path in [files.stdout, files.stderr] {
            do { try await deleteFile(instance, path: path) } catch {
                logger.debug("exec output not deleted", metadata: ["lxd.path": "\(path)", "lxd.error": "\(error)"])
            }
        }
        return try result.get()
    }

    /// Maps LXD 5.0's failed exec operations to their codes; LXD's text is kept.
    static func execFailure(_ e: LXDError, command: [String]) -> LXDError {
        let cmd = command.joined(separator: " ")
        switch e.message {
        case "Command not found":
            return LXDError(code: .commandNotFound, status: 127, message: "\(e.message): \(cmd)")
        case "Command not executable":
            return LXDError(code: .commandNotExecutable, status: 126, message: "\(e.message): \(cmd)")
        default:
            return e
        }
    }

    /// Reads one recorded exec log and deletes it.
    func fetchExecLog(_ path: String?, limit: Int) async throws -> String {
        guard let path, path.hasPrefix("/1.0/") else { return "" }
        let raw = try await exchange(makeRequest(.GET, uri(path)), limit: limit)
        try check(raw)
        let text = String(buffer: raw.body)
        let del = try? await exchange(makeRequest(.DELETE, uri(path)))
        if let del, del.status >= 300 {
            logger.debug("exec log not deleted", metadata: ["lxd.path": "\(path)", "lxd.status": "\(del.status)"])
        }
        return text
    }
}
