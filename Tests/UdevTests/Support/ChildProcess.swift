import Foundation
import Synchronization
import Testing

/// A child process whose stdout is collected line by line (on Foundation's reader thread, never
/// by blocking a test task). Always used through ``withChild(_:_:environment:_:)``, which kills
/// it and waits for it, whatever the test body does.
final class ChildProcess {
    let name: String
    private let process = Process()
    private let stdout = Pipe()
    private let stderr = Pipe()
    private let output = Output()

    /// Output and exit status, written from Foundation's threads.
    final class Output: Sendable {
        struct State {
            var pending = Data()
            var lines: [String] = []
            var stderr = Data()
            var stdoutClosed = false
            var exitStatus: Int32?
        }
        let state = Mutex(State())

        func appendStdout(_ data: Data) {
            state.withLock { s in
                if data.isEmpty { s.stdoutClosed = true; return }
                s.pending.append(data)
                while let nl = s.pending.firstIndex(of: 0x0A) {
                    s.lines.append(String(decoding: s.pending[s.pending.startIndex..<nl], as: UTF8.self))
                    s.pending = Data(s.pending[s.pending.index(after: nl)...])
                }
            }
        }
    }

    init(_ executable: URL, _ arguments: [String], environment: [String: String]) throws {
        name = executable.lastPathComponent
        process.executableURL = executable
        process.arguments = arguments
        process.environment = environment
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        let output = output
        process.terminationHandler = { p in
            let status = p.terminationStatus
            output.state.withLock { $0.exitStatus = status }
        }
        try process.run()
        // One plain blocking reader thread per pipe, until EOF: deterministic, unlike
        // readabilityHandler, and never on the cooperative pool.
        Self.drain(stdout.fileHandleForReading, name: "\(name)-stdout") { output.appendStdout($0) }
        Self.drain(stderr.fileHandleForReading, name: "\(name)-stderr") { data in
            output.state.withLock { $0.stderr.append(data) }
        }
    }

    private static func drain(_ handle: FileHandle, name: String, _ sink: @escaping @Sendable (Data) -> Void) {
        let fd = handle.fileDescriptor
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n > 0 { sink(Data(buffer[0..<n])); continue }
                if n < 0 && errno == EINTR { continue }
                break
            }
            sink(Data())  // EOF
            withExtendedLifetime(handle) {}
        }
        thread.name = name
        thread.start()
    }

    var stderrText: String { output.state.withLock { String(decoding: $0.stderr, as: UTF8.self) } }

    /// The next stdout line; fails (with the child's stderr) on timeout or when the child exits first.
    func nextLine(timeout: Duration = .seconds(20)) async throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (line, done, status) = output.state.withLock { s -> (String?, Bool, Int32?) in
                if !s.lines.isEmpty { return (s.lines.removeFirst(), false, s.exitStatus) }
                return (nil, s.exitStatus != nil && s.stdoutClosed, s.exitStatus)
            }
            if let line { return line }
            if done {
                throw ChildFailure("\(name) exited (status \(status ?? -1)) before printing the expected line; stderr: \(stderrText)")
            }
            if ContinuousClock.now >= deadline {
                throw ChildFailure("\(name) printed nothing more within \(timeout); stderr: \(stderrText)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits for the child to exit and its stdout to be fully read; returns the exit status.
    func waitForExit(timeout: Duration = .seconds(20)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let status = output.state.withLock({ $0.stdoutClosed ? $0.exitStatus : nil }) { return status }
            if ContinuousClock.now >= deadline {
                let (status, closed) = output.state.withLock { ($0.exitStatus, $0.stdoutClosed) }
                throw ChildFailure("\(name) did not exit within \(timeout) (exit status \(status.map(String.init) ?? "none"), stdout \(closed ? "closed" : "open")); stderr: \(stderrText)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Lines printed but not yet taken with `nextLine`.
    var remainingLines: [String] { output.state.withLock { $0.lines } }

    /// Kills the child if it still runs and waits until it is reaped.
    func stop() async {
        if output.state.withLock({ $0.exitStatus == nil }) {
            kill(process.processIdentifier, SIGKILL)
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while output.state.withLock({ $0.exitStatus == nil }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if output.state.withLock({ $0.exitStatus == nil }) {
            Issue.record("\(name) (pid \(process.processIdentifier)) was not reaped after SIGKILL")
        }
    }
}

struct ChildFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` with a started child process, then kills and reaps it whether `body` succeeded or threw.
func withChild<R>(_ executable: URL, _ arguments: [String], environment: [String: String],
                  _ body: (ChildProcess) async throws -> R) async throws -> R {
    let child = try ChildProcess(executable, arguments, environment: environment)
    do {
        let result = try await body(child)
        await child.stop()
        return result
    } catch {
        await child.stop()
        throw error
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= deadline { return false }
        try await Task.sleep(for: .milliseconds(20))
    }
    return true
}
