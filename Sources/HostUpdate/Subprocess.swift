import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program to completion on its own thread (never on the cooperative pool), with a timeout.
///
/// posix_spawn and waitpid, not Foundation's `Process`: `Process` learns that a child ended when a
/// socket it hands the child closes, so a restart command that leaves the agent running in the
/// background (which is its job) would never be seen to finish.
enum Subprocess {
    enum Output {
        /// Keep stdout in memory, up to `limit` bytes (past it the program is killed); stderr is dropped.
        case capture(limit: Int)
        /// Append stdout and stderr to a file.
        case file(String)
    }

    struct Result: Sendable {
        /// The exit status, or 128 + the signal that ended it.
        var status: Int32
        var stdout: Data
        var exceededLimit: Bool
        var timedOut: Bool
    }

    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: String? = nil,
                    output: Output, timeout: Duration) async throws -> Result {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Result, any Error>) in
            let thread = Thread {
                do { cont.resume(returning: try runBlocking(executable, arguments, environment: environment, stdin: stdin,
                                                            output: output, timeout: timeout)) } catch {
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

    struct SpawnError: Error, CustomStringConvertible {
        var description: String
    }

    private static func runBlocking(_ executable: String, _ arguments: [String], environment: [String: String]?, stdin: String?,
                                    output: Output, timeout: Duration) throws -> Result {
        // Every descriptor we open is close-on-exec; the spawn's dup2 gives the child only 0, 1 and 2.
        let inFD = open(stdin ?? "/dev/null", O_RDONLY | O_CLOEXEC)
        guard inFD >= 0 else { throw SpawnError(description: "cannot open \(stdin ?? "/dev/null"): errno \(errno)") }
        defer { close(inFD) }
        var readFD: Int32 = -1
        var outFD: Int32 = -1
        var errFD: Int32 = -1
        switch output {
        case .capture:
            var fds: [Int32] = [-1, -1]
            // pipe2 is not imported; nothing else in this process spawns between these two calls.
            guard pipe(&fds) == 0 else { throw SpawnError(description: "pipe: errno \(errno)") }
            _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
            readFD = fds[0]
            outFD = fds[1]
            errFD = open("/dev/null", O_WRONLY | O_CLOEXEC)
        case .file(let path):
            outFD = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            errFD = outFD
        }
        guard outFD >= 0, errFD >= 0 else { throw SpawnError(description: "cannot open the output: errno \(errno)") }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inFD, 0)
        posix_spawn_file_actions_adddup2(&actions, outFD, 1)
        posix_spawn_file_actions_adddup2(&actions, errFD, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // The child starts with no blocked signals and default handlers, whatever this process set up.
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envStrings = environment.map { $0.map { "\($0.key)=\($0.value)" } }
            ?? ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let envp: [UnsafeMutablePointer<CChar>?] = envStrings.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, envp)
        // The child has its copies; ours of the write ends must go so that EOF can arrive.
        if outFD >= 0 { close(outFD) }
        if errFD >= 0 && errFD != outFD { close(errFD) }
        guard rc == 0 else {
            if readFD >= 0 { close(readFD) }
            throw SpawnError(description: "cannot start \(executable): \(String(cString: strerror(rc)))")
        }

        let timedOut = Flag()
        let seconds = timeout / .seconds(1)
        let killer = DispatchWorkItem {
            timedOut.set()
            kill(pid, SIGKILL)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: killer)

        var out = Data()
        var exceeded = false
        if readFD >= 0, case .capture(let limit) = output {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(readFD, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                out.append(contentsOf: buffer[0..<n])
                if out.count > limit {
                    exceeded = true
                    kill(pid, SIGKILL)
                    break
                }
            }
            close(readFD)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        killer.cancel()
        // WIFEXITED / WEXITSTATUS / WTERMSIG, which Swift does not import.
        let signal = status & 0x7f
        let code = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        return Result(status: code, stdout: exceeded ? Data() : out, exceededLimit: exceeded, timedOut: timedOut.value)
    }
}

/// Set once from the timeout's queue, read after the child ended.
private final class Flag: @unchecked Sendable {
    // Safe: every access holds the lock.
    private let lock = NSLock()
    private var flag = false
    func set() { lock.lock(); flag = true; lock.unlock() }
    var value: Bool { lock.lock(); defer { lock.unlock() }; return flag }
}
