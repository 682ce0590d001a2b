import NIOCore

/// What a command run with `exec` produced.
public struct ExecResult: Sendable, Equatable {
    public var exitCode: Int
    public var stdout: String
    public var stderr: String

    public var succeeded: Bool { exitCode == 0 }
}

/// `POST /1.0/instances/<name>/exec` body (`definitions.InstanceExecPost`), record-output form.
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
    /// Runs a command in a running instance and returns its exit code and recorded output.
    ///
    /// A non-zero exit is a result, not an error. LXD 5.0 fails the operation itself for exit 127
    /// ("Command not found") and 126 ("Command not executable"): those throw `.commandNotFound` and
    /// `.commandNotExecutable`. Output paths come from the operation metadata (they moved in LXD 5.15)
    /// and the logs are deleted after reading.
    ///
    /// With `captureOutput: false` LXD discards the output and only the exit code comes back
    /// (2 requests instead of 6).
    public func exec(_ instance: String, _ command: [String], environment: [String: String] = [:],
                     user: UInt32? = nil, group: UInt32? = nil, cwd: String? = nil,
                     timeout: Duration? = nil, maxOutputBytes: Int = 16 * 1024 * 1024,
                     captureOutput: Bool = true) async throws -> ExecResult {
        try LXDName.validateInstance(instance)
        guard !command.isEmpty else { throw LXDError(code: .invalidArgument, message: "exec needs a command") }
        var body = InstanceExecPost(command: command, environment: environment, user: user, group: group, cwd: cwd)
        body.recordOutput = captureOutput
        let op = try await asyncOperation(.POST, Self.instancePath(instance) + "/exec", headers: Self.jsonHeaders,
                                          body: try Self.jsonBody(body), timeout: timeout)
        let out = captureOutput ? op.metadata?["output"] : nil
        let stdout = try await fetchExecLog(out?["1"]?.stringValue, limit: maxOutputBytes)
        let stderr = try await fetchExecLog(out?["2"]?.stringValue, limit: maxOutputBytes)
        do {
            _ = try Self.finished(op)
        } catch let e as LXDError where e.code == .operationFailed {
            throw Self.execFailure(e, command: command)
        }
        guard let code = op.metadata?["return"]?.intValue else {
            throw LXDError(code: .invalidResponse, message: "exec operation has no return code")
        }
        return ExecResult(exitCode: code, stdout: stdout, stderr: stderr)
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
