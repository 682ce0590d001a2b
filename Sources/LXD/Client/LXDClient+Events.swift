import Foundation

/// The events of one `/1.0/events` websocket, as an async sequence. Valid only inside `withEvents`.
/// Pings are answered and fragmented messages joined by the socket's own thread (``EventSocket``).
public struct LXDEventStream: AsyncSequence, Sendable {
    public typealias Element = Event
    let events: AsyncThrowingStream<Event, any Error>

    public func makeAsyncIterator() -> Iterator { Iterator(events: events.makeAsyncIterator()) }

    public struct Iterator: AsyncIteratorProtocol {
        var events: AsyncThrowingStream<Event, any Error>.AsyncIterator

        /// The next event; `nil` when LXD closes the stream (or the task is cancelled).
        public mutating func next() async throws -> Event? { try await events.next() }
    }
}

extension LXDClient {
    /// Subscribes to LXD's event websocket over the unix socket and runs `body` with the stream.
    /// The connection closes when `body` returns or throws. Once LXD has pinged the stream, a silence of
    /// `silenceLimitSeconds` ends it with a `.timeout` error.
    ///
    /// ```swift
    /// try await lxd.withEvents([.lifecycle]) { events in
    ///     for try await e in events where e.action == "instance-started" { ... }
    /// }
    /// ```
    public func withEvents<R: Sendable>(_ types: [EventType], silenceLimitSeconds: Int = 60,
                                        _ body: (LXDEventStream) async throws -> R) async throws -> R {
        var query = [("type", types.map(\.rawValue).joined(separator: ","))]
        // Instances in projects of their own (projectRouting): their events too.
        if projectRouting != nil && project == nil { query.append(("all-projects", "true")) }
        let socket = EventSocket(path: socketPath, uri: uri("/1.0/events", query), silenceLimitSeconds: silenceLimitSeconds)
        let (events, sink) = AsyncThrowingStream<Event, any Error>.makeStream()
        sink.onTermination = { _ in socket.close() }
        defer { socket.close() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { upgraded in socket.start(upgraded: upgraded, events: sink) }
        } onCancel: {
            socket.close()
        }
        return try await body(LXDEventStream(events: events))
    }
}
