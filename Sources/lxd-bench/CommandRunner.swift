import Foundation

/// Runs a program to completion without blocking the cooperative pool.
///
/// stdin is `/dev/null` and so is stdout unless it is asked for (so `lxc exec` takes its
/// non-interactive path, as in a script); stderr is collected for the error message. Cancelling the
/// calling task terminates the process.
struct CommandRunner: Sendable {
    let executable: String

    /// Finds `name` on `PATH`.
    static func locate(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let dirs = (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        return dirs.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func run(_ arguments: [String]) async throws {
        _ = try await execute(arguments, captureStdout: false)
    }

    /// Runs the program and returns what it wrote to stdout.
    func output(_ arguments: [String]) async throws -> String {
        String(decoding: try await execute(arguments, captureStdout: true), as: UTF8.self)
    }

    private func execute(_ arguments: [String], captureStdout: Bool) async throws -> Data {
        try Task.checkCancellation()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        let stdout = captureStdout ? Pipe() : nil
        process.standardOutput = stdout ?? FileHandle.nullDevice
        let stderr = Pipe()
        process.standardError = stderr

        let (status, output, errorOutput) = try await withTaskCancellationHandler {
            // The handler must be installed before the process can exit.
            let exited = AsyncStream<Int32> { continuation in
                process.terminationHandler = { p in
                    continuation.yield(p.terminationStatus)
                    continuation.finish()
                }
            }
            try process.run()
            async let output: Data = { if let stdout { await Self.drain(stdout) } else { Data() } }()
            let errorOutput = await Self.drain(stderr)
            var status: Int32 = -1
            for await s in exited { status = s }
            return (status, await output, errorOutput)
        } onCancel: {
            if process.isRunning { process.terminate() }
        }
        try Task.checkCancellation()
        guard status == 0 else {
            let text = String(decoding: errorOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw BenchError(message: "\(executable) \(arguments.joined(separator: " ")) exited \(status): \(text)")
        }
        return output
    }

    /// Reads a pipe to EOF on a plain thread: a blocking read must not sit on the cooperative pool.
    /// It ends when the child (and anything it forked) closed its end.
    private static func drain(_ pipe: Pipe) async -> Data {
        await withCheckedContinuation { (done: CheckedContinuation<Data, Never>) in
            let reader = pipe.fileHandleForReading
            DispatchQueue.global().async { done.resume(returning: reader.readDataToEndOfFile()) }
        }
    }
}
