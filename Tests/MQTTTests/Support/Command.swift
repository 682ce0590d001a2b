import Foundation
import Synchronization

/// What a finished command printed and returned.
struct CommandResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

struct CommandError: Error, CustomStringConvertible {
    var command: [String]
    var result: CommandResult
    var description: String {
        "`\(command.joined(separator: " "))` exited \(result.status)\n--- stdout ---\n\(result.stdout)\n--- stderr ---\n\(result.stderr)"
    }
}

/// Runs commands without blocking the cooperative pool: the exit arrives through the process's
/// termination handler, output goes to temporary files (no pipe to fill up).
enum Command {
    /// Runs `arguments[0]` (a path) with the rest; throws `CommandError` on a non-zero exit unless
    /// `check` is false.
    @discardableResult
    static func run(_ arguments: [String], check: Bool = true) async throws -> CommandResult {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("mqtt-cmd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let outURL = scratch.appendingPathComponent("out")
        let errURL = scratch.appendingPathComponent("err")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        try? out.close()
        try? err.close()
        let result = CommandResult(
            status: status,
            stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        )
        if check && status != 0 { throw CommandError(command: arguments, result: result) }
        return result
    }
}

/// A long-running child (e.g. `mosquitto_pub -l`) with a pipe to its stdin, killed on demand.
final class ChildProcess: Sendable {
    /// Set by the termination handler; resumes whoever waits for the exit.
    private final class Exit: Sendable {
        private let state = Mutex<(exited: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

        func signal() {
            state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.exited = true
                defer { state.waiter = nil }
                return state.waiter
            }?.resume()
        }

        func wait() async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = state.withLock { state -> Bool in
                    if state.exited { return true }
                    state.waiter = continuation
                    return false
                }
                if done { continuation.resume() }
            }
        }
    }

    private let process: Process
    private let stdin: Pipe
    private let exit = Exit()

    init(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let stdin = Pipe()
        process.standardInput = stdin
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        self.process = process
        self.stdin = stdin
        process.terminationHandler = { [exit] _ in exit.signal() }
        try process.run()
    }

    func writeLine(_ line: String) throws {
        try stdin.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
    }

    /// SIGKILL: the child gets no chance to send anything (no MQTT DISCONNECT, no TLS close_notify).
    func kill() async {
        Foundation.kill(process.processIdentifier, SIGKILL)
        await exit.wait()
        try? stdin.fileHandleForWriting.close()
    }
}
