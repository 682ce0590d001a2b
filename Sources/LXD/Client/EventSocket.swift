import Crypto
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// LXD's `/1.0/events` websocket (RFC 6455, client side) read by one thread of its own, with blocking
/// reads on the unix socket.
///
/// Why not NIO, as the rest of the client: LXD pings every events listener (`keepalive`). An idle gateway
/// hears nothing else, and through NIO's pipeline (event loop, byte-to-message decoder, async channel,
/// writer for the pong) each ping ran code nothing else at idle runs: 58 of the 98 page faults that
/// brought the idle daemon back from 11.7 to 18.1 MiB after a memory trim (`perf record -e page-faults`,
/// `scripts/bench-provision`). Here a ping is one `read(2)` and one `write(2)` on this thread.
///
/// Events go to an unbounded stream: LXD's lifecycle events are few, and a dropped one would leave a copy
/// of an instance stale. The thread owns the descriptor and closes it when it ends; ``close()`` only shuts
/// the socket down, under the same lock, so a descriptor number reused elsewhere is never touched.
final class EventSocket: Sendable {
    let path: String
    let uri: String
    /// The largest message accepted (an event is a few KiB; NIO's decoder had the same limit).
    static let maxMessageBytes = 1 << 22
    /// Once LXD has pinged (LXD 5.0 pings every 10 s), this long without a frame ends the stream as an error:
    /// the gateway follows LXD's events again and probes LXD, rather than trust a stream that went quiet.
    let silenceLimitSeconds: Int

    private struct State {
        var fd: Int32 = -1
        var shut = false
    }
    private let state = Mutex(State())

    init(path: String, uri: String, silenceLimitSeconds: Int = 60) {
        self.path = path
        self.uri = uri
        self.silenceLimitSeconds = silenceLimitSeconds
    }

    /// Connects, upgrades, then resumes `upgraded` (or throws into it) and yields every event into `events`
    /// until LXD closes the stream (finished), the connection fails (finished with the error) or
    /// ``close()`` is called.
    func start(upgraded: CheckedContinuation<Void, any Error>, events: AsyncThrowingStream<Event, any Error>.Continuation) {
        let thread = Thread { [self] in
            var pending: CheckedContinuation<Void, any Error>? = upgraded
            do {
                var reader = try connectAndUpgrade()
                pending?.resume()
                pending = nil
                try readEvents(&reader, into: events)
                events.finish()
            } catch {
                if let pending { pending.resume(throwing: error) } else { events.finish(throwing: error) }
            }
            state.withLock { s in
                if s.fd >= 0 { Glibc.close(s.fd) }
                s.fd = -1
                s.shut = true
            }
        }
        thread.name = "lxd-events"
        thread.start()
    }

    /// Ends the stream: the thread's blocked read returns, and the thread closes the socket.
    func close() {
        state.withLock { s in
            if s.fd >= 0 && !s.shut { _ = shutdown(s.fd, Int32(SHUT_RDWR)) }
            s.shut = true
        }
    }

    // MARK: - The thread's side

    private func connectAndUpgrade() throws -> FrameReader {
        let fd: Int32
        switch LXDSocket.connect(path) {
        case .success(let connected): fd = connected
        case .failure(let failure): throw LXDError(code: .unreachable, message: "\(path): \(String(cString: strerror(failure.rawValue)))")
        }
        let stillWanted = state.withLock { s -> Bool in
            guard !s.shut else { return false }
            s.fd = fd
            return true
        }
        guard stillWanted else {
            Glibc.close(fd)
            throw CancellationError()
        }
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let request = "GET \(uri) HTTP/1.1\r\nHost: unix.socket\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try Self.writeAll(fd, Array(request.utf8))
        var reader = FrameReader(fd: fd)
        let head = try reader.headers()
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let status = lines.first.map(String.init) ?? ""
        guard status.hasPrefix("HTTP/1.1 101") else {
            throw LXDError(code: .badRequest, message: "LXD refused the events websocket for \(uri): \(status)")
        }
        let expected = Data(Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))).base64EncodedString()
        let accept = lines.dropFirst().compactMap { line -> String? in
            guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == "sec-websocket-accept" else { return nil }
            return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }.first
        guard accept == expected else {
            throw LXDError(code: .invalidResponse, message: "the events websocket's Sec-WebSocket-Accept does not match its key")
        }
        return reader
    }

    private func readEvents(_ reader: inout FrameReader, into events: AsyncThrowingStream<Event, any Error>.Continuation) throws {
        var message: [UInt8]?
        while true {
            guard let frame = try reader.frame(maxPayload: Self.maxMessageBytes) else { return }  // closed without a close frame
            switch frame.opcode {
            case 0x1, 0x2:  // text, binary
                guard message == nil else { throw Self.protocolError("a new message began inside a fragmented one") }
                message = frame.payload
            case 0x0:  // continuation
                guard message != nil else { throw Self.protocolError("a continuation frame without a message") }
                message?.append(contentsOf: frame.payload)
            case 0x8:  // close: answer it with its status code, then the stream ends
                try? Self.writeFrame(reader.fd, opcode: 0x8, payload: Array(frame.payload.prefix(2)))
                return
            case 0x9:
                try Self.writeFrame(reader.fd, opcode: 0xA, payload: frame.payload)
                if !reader.watched { reader.watch(silenceSeconds: silenceLimitSeconds) }
                continue
            case 0xA:
                continue
            default:
                throw Self.protocolError("reserved opcode \(frame.opcode)")
            }
            guard let whole = message else { continue }
            guard whole.count <= Self.maxMessageBytes else { throw Self.protocolError("a message over \(Self.maxMessageBytes) bytes") }
            guard frame.fin else { continue }
            message = nil
            do {
                events.yield(try JSONDecoder().decode(Event.self, from: Data(whole)))
            } catch {
                throw LXDError(code: .invalidResponse, message: "undecodable event: \(error)")
            }
        }
    }

    static func protocolError(_ what: String) -> LXDError {
        LXDError(code: .invalidResponse, message: "events websocket: \(what)")
    }

    /// A client frame: final, masked (RFC 6455 5.3), payload at most 125 bytes (control frames only).
    static func writeFrame(_ fd: Int32, opcode: UInt8, payload: [UInt8]) throws {
        precondition(payload.count <= 125)
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        var frame: [UInt8] = [0x80 | opcode, 0x80 | UInt8(payload.count)] + mask
        for (i, b) in payload.enumerated() { frame.append(b ^ mask[i & 3]) }
        try writeAll(fd, frame)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw LXDError(code: .unreachable, message: "events websocket: write: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }
}

/// Buffered blocking reads of one socket: the HTTP response head, then websocket frames.
struct FrameReader {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0

    /// Whether a silence limit is set (``watch(silenceSeconds:)``).
    private(set) var watched = false

    init(fd: Int32) { self.fd = fd }

    /// From now on a read that waits `silenceSeconds` for a byte fails (`SO_RCVTIMEO`).
    mutating func watch(silenceSeconds: Int) {
        var limit = timeval(tv_sec: silenceSeconds, tv_usec: 0)
        watched = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size)) == 0
    }

    struct Frame {
        var fin: Bool
        var opcode: UInt8
        var payload: [UInt8]
    }

    /// The response head up to its blank line (at most 16 KiB); what follows stays buffered.
    mutating func headers() throws -> String {
        let end: [UInt8] = Array("\r\n\r\n".utf8)
        while true {
            if let r = buffer[start...].firstRange(of: end) {
                let head = String(decoding: buffer[start..<r.lowerBound], as: UTF8.self)
                start = r.upperBound
                return head
            }
            guard buffer.count - start < 16 << 10 else { throw EventSocket.protocolError("an HTTP response head over 16 KiB") }
            guard try fill() else { throw LXDError(code: .unreachable, message: "events websocket: LXD closed the connection during the upgrade") }
        }
    }

    /// The next frame; nil when the peer closed the connection between frames.
    mutating func frame(maxPayload: Int) throws -> Frame? {
        guard try need(2, atStart: true) else { return nil }
        let b0 = take(1)[0], b1 = take(1)[0]
        guard b0 & 0x70 == 0 else { throw EventSocket.protocolError("reserved bits set (no extension was negotiated)") }
        guard b1 & 0x80 == 0 else { throw EventSocket.protocolError("a masked frame from the server") }
        let opcode = b0 & 0x0F
        var length = Int(b1 & 0x7F)
        if length == 126 {
            _ = try need(2)
            length = take(2).reduce(0) { $0 << 8 | Int($1) }
        } else if length == 127 {
            _ = try need(8)
            let bytes = take(8)
            guard bytes[0] & 0x80 == 0 else { throw EventSocket.protocolError("a frame length over 2^63") }
            length = bytes.reduce(0) { $0 << 8 | Int($1) }
        }
        if opcode >= 0x8 {
            guard b0 & 0x80 != 0, length <= 125 else { throw EventSocket.protocolError("a fragmented or long control frame") }
        }
        guard length <= maxPayload else { throw EventSocket.protocolError("a frame of \(length) bytes (at most \(maxPayload))") }
        _ = try need(length)
        return Frame(fin: b0 & 0x80 != 0, opcode: opcode, payload: take(length))
    }

    /// Makes `count` bytes available. False when the peer closed before any of them came and `atStart`
    /// (a clean end between frames); a close in the middle of a frame throws.
    private mutating func need(_ count: Int, atStart: Bool = false) throws -> Bool {
        while buffer.count - start < count {
            let had = buffer.count - start
            guard try fill() else {
                if atStart && had == 0 { return false }
                throw LXDError(code: .unreachable, message: "events websocket: LXD closed the connection inside a frame")
            }
        }
        return true
    }

    private mutating func take(_ count: Int) -> [UInt8] {
        defer { start += count }
        return Array(buffer[start..<start + count])
    }

    /// One read of up to 64 KiB. False at end of stream (also after ``EventSocket/close()``).
    private mutating func fill() throws -> Bool {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 64 << 10 {
            buffer.removeFirst(start)
            start = 0
        }
        let had = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: 64 << 10))
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + had, 64 << 10) }
            let failure = errno
            if n < 0 && failure == EINTR { continue }
            buffer.removeLast((64 << 10) - max(n, 0))
            if n < 0 && (failure == EAGAIN || failure == EWOULDBLOCK) && watched {
                throw LXDError(code: .timeout, message: "events websocket: LXD pinged, then sent nothing for longer than it pings")
            }
            if n < 0 {
                throw LXDError(code: .unreachable, message: "events websocket: read: \(String(cString: strerror(failure)))")
            }
            return n > 0
        }
    }
}
