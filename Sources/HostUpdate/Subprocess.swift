import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program to completion on its own thread (never on the cooperative pool), with a timeout.
enum Subprocess {
    enum Output {
        /// Keep stdout in memory, up to `limit` bytes (past it the program is killed); stderr is dropped.
        case capture(limit: Int)
        /// Append stdout and stderr to a file (programs that leave children behind, such as a restart
        /// command, keep no pipe of ours open this way).
        case file(String)
    }

    struct Result: Sendable {
        var status: Int32
        var stdout: Data
        var exceededLimit: Bool
        var timedOut: Bool
    }

    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil,
                    currentDirectory: String? = nil, output: Output, timeout: Duration) async throws -> Result {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Result, any Error>) in
            let thread = Thread {
                do { cont.resume(returning: try runBlocking(executable, arguments, environment: environment, stdin: stdin,
                                                            currentDirectory: currentDirectory, output: output, timeout: timeout)) } catch {
                    cont.resume(throwing: error)
                }
            }
            thread.start()
        }
    }

    /// Resolves a bare program name through PATH; a path is returned as is.
    static func resolve(_ program: String) -> String? {
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    private static func runBlocking(_ executable: String, _ arguments: [String], environment: [String: String]?, stdin: String?,
                                    currentDirectory: String?, output: Output, timeout: Duration) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        if let currentDirectory { p.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        p.standardInput = try stdin.map { try FileHandle(forReadingFrom: URL(fileURLWithPath: $0)) } ?? FileHandle.nullDevice
        var pipe: Pipe?
        var logHandle: FileHandle?
        switch output {
        case .capture:
            let pp = Pipe()
            pipe = pp
            p.standardOutput = pp
            p.standardError = FileHandle.nullDevice
        case .file(let path):
            if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            h.seekToEndOfFile()
            logHandle = h
            p.standardOutput = h
            p.standardError = h
        }
        try p.run()
        let pid = p.processIdentifier
        let timedOut = TimeoutFlag()
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let killer = DispatchWorkItem {
            timedOut.set()
            kill(pid, SIGTERM)
            DispatchQueue.global().asyncAfter(deadline: .now() + 5) { kill(pid, SIGKILL) }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: killer)
        var out = Data()
        var exceeded = false
        if let pipe, case .capture(let limit) = output {
            let h = pipe.fileHandleForReading
            while true {
                let chunk = h.availableData
                if chunk.isEmpty { break }
                out.append(chunk)
                if out.count > limit {
                    exceeded = true
                    kill(pid, SIGKILL)
                    break
                }
            }
            try? h.close()
        }
        p.waitUntilExit()
        killer.cancel()
        try? logHandle?.close()
        return Result(status: p.terminationStatus, stdout: exceeded ? Data() : out, exceededLimit: exceeded, timedOut: timedOut.value)
    }
}

/// Set once from the timeout's queue, read after the process ended.
private final class TimeoutFlag: @unchecked Sendable {
    // Safe: guarded by the lock.
    private let lock = NSLock()
    private var flag = false
    func set() { lock.lock(); flag = true; lock.unlock() }
    var value: Bool { lock.lock(); defer { lock.unlock() }; return flag }
}
