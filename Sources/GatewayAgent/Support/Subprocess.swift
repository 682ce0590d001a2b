import Foundation
import Synchronization

/// Runs a host command without blocking the cooperative pool: the process is awaited through its
/// termination handler, never with `waitUntilExit`.
enum Subprocess {
    struct Result: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ executable: String, _ arguments: [String], stdin: String? = nil) async throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<Result, Error>) in
            // Pipes are drained on their own threads so a chatty child cannot block on a full pipe.
            let outData = Reader(out.fileHandleForReading), errData = Reader(err.fileHandleForReading)
            p.terminationHandler = { proc in
                c.resume(returning: Result(status: proc.terminationStatus, stdout: outData.finish(), stderr: errData.finish()))
            }
            do {
                try p.run()
            } catch {
                p.terminationHandler = nil
                c.resume(throwing: error)
                return
            }
            if let stdin { inp.fileHandleForWriting.write(Data(stdin.utf8)) }
            try? inp.fileHandleForWriting.close()
        }
    }

    /// Reads a pipe to its end on a thread of its own.
    final class Reader: Sendable {
        private let data = Mutex(Data())
        private let done = DispatchSemaphore(value: 0)

        init(_ handle: FileHandle) {
            Thread.detachNewThread { [self] in
                let read = handle.readDataToEndOfFile()
                data.withLock { $0 = read }
                done.signal()
            }
        }

        /// Waits for the end of the pipe (called from the process's termination handler, off the pool).
        func finish() -> String {
            done.wait()
            return String(decoding: data.withLock { $0 }, as: UTF8.self)
        }
    }
}
