import Crypto
import Foundation
import Logging
import Synchronization
import Testing
@testable import LXD

#if canImport(Glibc)
import Glibc
#endif

/// The events websocket against a scripted server on a unix socket: what LXD sends (pings, fragments,
/// close) and what it must never (masked frames, a wrong accept key, a refusal) (RFC 6455).
@Suite struct EventSocketTests {
    static let event = #"{"type":"lifecycle","timestamp":"2026-12-05T11:00:00Z","metadata":{"action":"instance-started","source":"/1.0/instances/c1"}}"#

    @Test func pingsAreAnsweredAndFragmentsJoined() async throws {
        let server = try ScriptedServer { conn in
            try conn.upgrade()
            conn.send(ScriptedServer.frame(opcode: 0x9, Array("keepalive".utf8)))
            let pong = try conn.readClientFrame()
            let bytes = Array(Self.event.utf8)
            conn.send(ScriptedServer.frame(fin: false, opcode: 0x1, Array(bytes[..<20])))
            conn.send(ScriptedServer.frame(opcode: 0x9, Array("mid".utf8)))  // a control frame between fragments
            conn.send(ScriptedServer.frame(fin: false, opcode: 0x0, Array(bytes[20..<50])))
            conn.send(ScriptedServer.frame(opcode: 0x0, Array(bytes[50...])))
            let pong2 = try conn.readClientFrame()
            conn.send(ScriptedServer.frame(opcode: 0x8, [0x03, 0xE8]))
            let close = try conn.readClientFrame()
            return [pong, pong2, close]
        }
        let lxd = (try LXDClient(socketPath: server.path, logger: Logger(label: "test")))
        let seen = try await lxd.withEvents([.lifecycle]) { events in
            var actions: [String] = []
            for try await e in events { actions.append(e.action ?? "") }
            return actions
        }
        #expect(seen == ["instance-started"])
        let frames = try server.result()
        #expect(frames.map(\.opcode) == [0xA, 0xA, 0x8])
        #expect(frames.map(\.masked) == [true, true, true])
        #expect(frames[0].payload == Array("keepalive".utf8))
        #expect(frames[1].payload == Array("mid".utf8))
        #expect(frames[2].payload == [0x03, 0xE8])
    }

    @Test func aRefusalAWrongAcceptKeyAndAMaskedFrameAreErrors() async throws {
        let refusing = try ScriptedServer { conn in
            _ = try conn.readHead()
            conn.send(Array("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".utf8))
            return []
        }
        await #expect { try await (try LXDClient(socketPath: refusing.path, logger: Logger(label: "t"))).withEvents([.lifecycle]) { _ in } }
            throws: { ($0 as? LXDError)?.code == .badRequest && "\($0)".contains("403") }

        let wrongKey = try ScriptedServer { conn in
            _ = try conn.readHead()
            conn.send(Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n".utf8))
            return []
        }
        await #expect { try await (try LXDClient(socketPath: wrongKey.path, logger: Logger(label: "t"))).withEvents([.lifecycle]) { _ in } }
            throws: { ($0 as? LXDError)?.code == .invalidResponse }

        let masking = try ScriptedServer { conn in
            try conn.upgrade()
            var f = ScriptedServer.frame(opcode: 0x1, Array(Self.event.utf8))
            f[1] |= 0x80
            conn.send(f)
            return []
        }
        await #expect {
            try await (try LXDClient(socketPath: masking.path, logger: Logger(label: "t"))).withEvents([.lifecycle]) { events in
                for try await _ in events {}
            }
        } throws: { ($0 as? LXDError)?.code == .invalidResponse && "\($0)".contains("masked") }
    }

    /// The consumer leaves while the thread waits in `read(2)`: the socket is shut down and closed, which
    /// the server sees as the end of the connection.
    @Test func leavingTheStreamClosesTheConnection() async throws {
        let server = try ScriptedServer { conn in
            try conn.upgrade()
            conn.send(ScriptedServer.frame(opcode: 0x1, Array(Self.event.utf8)))
            return [try conn.readClientFrame()]  // nothing comes: the client closed
        }
        let first = try await (try LXDClient(socketPath: server.path, logger: Logger(label: "t"))).withEvents([.lifecycle]) { events in
            var it = events.makeAsyncIterator()
            return try await it.next()?.action
        }
        #expect(first == "instance-started")
        #expect(throws: ScriptedServer.Closed.self) { try server.result() }
    }

    /// A server that pinged and then fell silent is not trusted to be alive: the stream ends with `.timeout`.
    /// One that never pinged may stay silent.
    @Test func silenceAfterAPingEndsTheStream() async throws {
        let server = try ScriptedServer { conn in
            try conn.upgrade()
            conn.send(ScriptedServer.frame(opcode: 0x9, Array("keepalive".utf8)))
            return [try conn.readClientFrame(), try conn.readClientFrame()]  // the pong, then the client leaves
        }
        let started = ContinuousClock.now
        await #expect {
            try await (try LXDClient(socketPath: server.path, logger: Logger(label: "t"))).withEvents([.lifecycle], silenceLimitSeconds: 1) { events in
                for try await _ in events {}
            }
        } throws: { ($0 as? LXDError)?.code == .timeout }
        #expect(ContinuousClock.now - started < .seconds(5))
        #expect(throws: ScriptedServer.Closed.self) { try server.result() }

        let quiet = try ScriptedServer { conn in
            try conn.upgrade()
            Thread.sleep(forTimeInterval: 2)
            conn.send(ScriptedServer.frame(opcode: 0x1, Array(Self.event.utf8)))
            return []
        }
        let action = try await (try LXDClient(socketPath: quiet.path, logger: Logger(label: "t"))).withEvents([.lifecycle], silenceLimitSeconds: 1) { events in
            var it = events.makeAsyncIterator()
            return try await it.next()?.action
        }
        #expect(action == "instance-started")
    }

    @Test func anUnreachableSocketIsUnreachable() async throws {
        await #expect { try await (try LXDClient(socketPath: "/nonexistent/iotgw.socket", logger: Logger(label: "t"))).withEvents([.lifecycle]) { _ in } }
            throws: { ($0 as? LXDError)?.code == .unreachable }
    }
}

/// A one-connection unix socket server on a thread, running `script` against the accepted connection.
final class ScriptedServer: Sendable {
    struct Closed: Error {}
    struct ClientFrame: Sendable {
        var opcode: UInt8
        var masked: Bool
        var payload: [UInt8]
    }

    let path: String
    private let outcome = Mutex<Result<[ClientFrame], any Error>?>(nil)
    private let done = DispatchSemaphore(value: 0)

    init(_ script: @escaping @Sendable (Connection) throws -> [ClientFrame]) throws {
        let path = "/tmp/iotgw-evt-\(UInt32.random(in: 0...UInt32.max)).sock"
        self.path = path
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { buf in for (i, b) in path.utf8.enumerated() { buf[i] = b } }
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0 && listen(listener, 1) == 0)
        Thread { [self] in
            let fd = accept(listener, nil, nil)
            close(listener)
            unlink(path)
            let conn = Connection(fd: fd)
            let r = Result { try script(conn) }
            close(fd)
            outcome.withLock { $0 = r }
            done.signal()
        }.start()
    }

    /// What the script returned (or threw); waits for it for up to 10 s.
    func result() throws -> [ClientFrame] {
        guard done.wait(timeout: .now() + 10) == .success else { throw Closed() }
        return try outcome.withLock { $0! }.get()
    }

    /// A server frame: never masked.
    static func frame(fin: Bool = true, opcode: UInt8, _ payload: [UInt8]) -> [UInt8] {
        precondition(payload.count < 65536)
        var f: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        if payload.count < 126 { f.append(UInt8(payload.count)) } else { f += [126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)] }
        return f + payload
    }

    final class Connection: @unchecked Sendable {
        let fd: Int32
        var buffer: [UInt8] = []
        init(fd: Int32) { self.fd = fd }

        func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

        func read(_ count: Int) throws -> [UInt8] {
            while buffer.count < count {
                var chunk = [UInt8](repeating: 0, count: 4096)
                let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { throw Closed() }
                buffer += chunk[..<n]
            }
            defer { buffer.removeFirst(count) }
            return Array(buffer[..<count])
        }

        func readHead() throws -> String {
            var head: [UInt8] = []
            while !head.suffix(4).elementsEqual(Array("\r\n\r\n".utf8)) { head += try read(1) }
            return String(decoding: head, as: UTF8.self)
        }

        /// Reads the upgrade request and answers it as LXD does.
        func upgrade() throws {
            let head = try readHead()
            let key = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("sec-websocket-key:") }!
                .split(separator: ":")[1].trimmingCharacters(in: .whitespaces)
            let accept = Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
            send(Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n".utf8))
        }

        func readClientFrame() throws -> ClientFrame {
            let h = try read(2)
            let masked = h[1] & 0x80 != 0
            let length = Int(h[1] & 0x7F)
            let mask = masked ? try read(4) : [0, 0, 0, 0]
            let payload = try read(length).enumerated().map { $0.element ^ mask[$0.offset & 3] }
            return ClientFrame(opcode: h[0] & 0x0F, masked: masked, payload: payload)
        }
    }
}
