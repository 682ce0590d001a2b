import Foundation
import NIOFoundationCompat
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// The events of one `/1.0/events` websocket, as an async sequence. Valid only inside `withEvents`.
public struct LXDEventStream: AsyncSequence, Sendable {
    public typealias Element = Event
    let inbound: NIOAsyncChannelInboundStream<WebSocketFrame>
    let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>

    public func makeAsyncIterator() -> Iterator {
        Iterator(frames: inbound.makeAsyncIterator(), outbound: outbound)
    }

    public struct Iterator: AsyncIteratorProtocol {
        var frames: NIOAsyncChannelInboundStream<WebSocketFrame>.AsyncIterator
        let outbound: NIOAsyncChannelOutboundWriter<WebSocketFrame>
        var pending = ByteBuffer()

        /// The next event; `nil` when LXD closes the stream. Answers pings; joins fragmented messages.
        public mutating func next() async throws -> Event? {
            while let frame = try await frames.next() {
                switch frame.opcode {
                case .text, .binary, .continuation:
                    var data = frame.unmaskedData
                    pending.writeBuffer(&data)
                    guard frame.fin else { continue }
                    defer { pending.clear() }
                    do {
                        return try JSONDecoder().decode(Event.self, from: pending)
                    } catch {
                        throw LXDError(code: .invalidResponse, message: "undecodable event: \(error)")
                    }
                case .ping:
                    let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
                    try await outbound.write(pong)
                case .connectionClose:
                    return nil
                default:
                    continue
                }
            }
            return nil
        }
    }
}

extension LXDClient {
    enum EventsUpgrade: Sendable {
        case websocket(NIOAsyncChannel<WebSocketFrame, WebSocketFrame>)
        case refused
    }

    /// Subscribes to LXD's event websocket over the unix socket and runs `body` with the stream.
    /// The connection closes when `body` returns or throws.
    ///
    /// ```swift
    /// try await lxd.withEvents([.lifecycle]) { events in
    ///     for try await e in events where e.action == "instance-started" { ... }
    /// }
    /// ```
    public func withEvents<R: Sendable>(_ types: [EventType], _ body: (LXDEventStream) async throws -> R) async throws -> R {
        var query = [("type", types.map(\.rawValue).joined(separator: ","))]
        // Instances in projects of their own (projectRouting): their events too.
        if projectRouting != nil && project == nil { query.append(("all-projects", "true")) }
        let requestURI = uri("/1.0/events", query)
        let upgrade: EventLoopFuture<EventsUpgrade>
        do {
            upgrade = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(unixDomainSocketPath: socketPath) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let upgrader = NIOTypedWebSocketClientUpgrader<EventsUpgrade>(maxFrameSize: 1 << 22) { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                .websocket(try NIOAsyncChannel<WebSocketFrame, WebSocketFrame>(wrappingChannelSynchronously: channel))
                            }
                        }
                        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: requestURI,
                                                   headers: ["Host": "unix.socket", "Content-Length": "0"])
                        let config = NIOTypedHTTPClientUpgradeConfiguration(
                            upgradeRequestHead: head, upgraders: [upgrader],
                            notUpgradingCompletionHandler: { channel in channel.eventLoop.makeCompletedFuture { .refused } })
                        return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                            configuration: .init(upgradeConfiguration: config))
                    }
                }
        } catch {
            throw LXDError(code: .unreachable, message: "\(socketPath): \(error)")
        }
        switch try await upgrade.get() {
        case .refused:
            throw LXDError(code: .badRequest, message: "LXD refused the events websocket for \(requestURI)")
        case .websocket(let channel):
            return try await channel.executeThenClose { inbound, outbound in
                try await body(LXDEventStream(inbound: inbound, outbound: outbound))
            }
        }
    }
}
