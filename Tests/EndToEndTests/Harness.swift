import Foundation
import Testing
import LXD
import UmockdevTesting

/// Locates the built executables and runs them as real processes.
enum Bin {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func path(_ name: String) throws -> String {
        let candidates = [repo.appendingPathComponent(".build/debug/\(name)").path,
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name).path]
        guard let p = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("\(name) is not built (looked in \(candidates)); run 'swift build' first (scripts/test does)")
            throw HarnessError("missing \(name)")
        }
        return p
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

struct Output {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion, optionally feeding stdin.
@discardableResult
func run(_ executable: String, _ args: [String], stdin: String? = nil, env: [String: String] = [:]) throws -> Output {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
    let out = Pipe(), err = Pipe(), inp = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    try p.run()
    if let stdin { inp.fileHandleForWriting.write(Data(stdin.utf8)) }
    try inp.fileHandleForWriting.close()
    // Read both pipes before waiting, so a chatty child cannot block on a full pipe.
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// A long-running child (a daemon) whose output goes to a log file.
final class Daemon {
    let name: String
    let process = Process()
    let log: URL

    init(name: String, executable: String, args: [String], env: [String: String], logDir: URL) throws {
        self.name = name
        log = logDir.appendingPathComponent("\(name).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = args
        process.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var isRunning: Bool { process.isRunning }

    /// SIGKILL: the crash case.
    func kill9() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return process.terminationStatus
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// Polls `condition` until it returns a value or `timeout` passes.
func eventually<T>(_ what: String, timeout: Duration = .seconds(60), poll: Duration = .milliseconds(200),
                   _ condition: () async throws -> T?) async throws -> T {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    var lastError: (any Error)?
    while clock.now < deadline {
        do {
            if let v = try await condition() { return v }
        } catch {
            lastError = error
        }
        try await Task.sleep(for: poll)
    }
    throw HarnessError("timed out waiting for \(what)\(lastError.map { " (last error: \($0))" } ?? "")")
}

/// A real character node under /dev (like a USB serial adapter's tty) for passthrough into LXD.
final class CharNode {
    let path: String
    init() throws {
        path = "/dev/ttyIOTGW\(UInt16.random(in: 1000...60000))"
        unlink(path)
        guard mknod(path, S_IFCHR | 0o660, dev_t((1 << 8) | 5)) == 0 else {
            Issue.record("mknod \(path) failed (errno \(errno)): the end-to-end tests must run as root")
            throw HarnessError("mknod failed")
        }
    }
    deinit { unlink(path) }
}

func freePort() -> Int {
    // Bind to port 0 to let the kernel choose, then release it for the daemon.
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
    let d = JSONDecoder()
    d.dateDecodingStrategy = .iso8601
    return try d.decode(T.self, from: Data(text.utf8))
}

/// Whether a TCP connection to `host:port` succeeds within about two seconds.
func canConnect(host: String, port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var tv = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr(host)
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
}

extension Testbed {
    /// Adds a USB serial adapter and sends the `add` uevents udev sends for it: its usb_device, then its tty.
    @discardableResult
    func plug(vendorID: String, productID: String, serial: String? = nil, manufacturer: String? = nil, product: String? = nil,
              ttyName: String, devnode: String) throws -> (usbSyspath: String, ttySyspath: String) {
        let d = try addUSBSerialAdapter(vendorID: vendorID, productID: productID, serial: serial, manufacturer: manufacturer,
                                        product: product, ttyName: ttyName, devnode: devnode)
        try uevent(d.usbSyspath, "add")
        try uevent(d.ttySyspath, "add")
        return d
    }
}

/// A TCP socket listening on every address of the host (connections wait in its backlog).
final class TCPListener {
    private(set) var fd: Int32
    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = INADDR_ANY
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 16) == 0 else { throw HarnessError("cannot listen on port \(port) (errno \(errno))") }
    }
    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
    deinit { close() }
}
