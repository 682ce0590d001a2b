import Foundation

/// Runs a program to completion without blocking the cooperative pool.
///
/// stdin and stdout are `/dev/null` (so `lxc exec` takes its non-interactive path, as in a script);
/// stderr is collected for the error message. Cancelling the calling task terminates the process.
struct CommandRunner: Sendable {
    let executable: String

    /// Finds `name` on `PATH`.
    static func locate(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if name.contains("/") { return FileManager.default.isExecutableFile(atPath: name) ? name : nil }
        let dirs = (environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        return dirs.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func run(_ arguments: [String]) async throws {
        try Task.checkCancellation()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        let stderr = Pipe()
        process.standardError = stderr

        let (status, errorOutput) = try await withTaskCancellationHandler {
            // The handler must be installed before the process can exit.
            let exited = AsyncStream<Int32> { continuation in
                process.terminationHandler = { p in
                    continuation.yield(p.terminationStatus)
                    continuation.finish()
                }
            }
            try process.run()
            // Drained on a plain thread: a blocking read must not sit on the cooperative pool. It
            // ends at EOF, when the child (and anything it forked) closed its end.
            let errorOutput = await withCheckedContinuation { (done: CheckedContinuation<Data, Never>) in
                let reader = stderr.fileHandleForReading
                DispatchQueue.global().async { done.resume(returning: reader.readDataToEndOfFile()) }
            }
            var status: Int32 = -1
            for await s in exited { status = s }
            return (status, errorOutput)
        } onCancel: {
            if process.isRunning { process.terminate() }
        }
        try Task.checkCancellation()
        guard status == 0 else {
            let text = String(decoding: errorOutput, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw BenchError(message: "\(executable) \(arguments.joined(separator: " ")) exited \(status): \(text)")
        }
    }
}
