import MQTT

/// Records a client's events as they arrive, so tests can wait for one (with a timeout) and then
/// look at what came before it.
actor EventLog {
    private(set) var events: [MQTTEvent] = []
    private(set) var finished = false

    /// Starts consuming `client.events` (the client's only consumer).
    static func recording(_ client: MQTTClient) -> EventLog {
        let log = EventLog()
        let stream = client.events
        Task {
            for await event in stream { await log.append(event) }
            await log.finish()
        }
        return log
    }

    private func append(_ event: MQTTEvent) { events.append(event) }
    private func finish() { finished = true }

    var count: Int { events.count }

    /// The index of the first event at index >= `after` that matches, without waiting.
    func firstIndex(after: Int = 0, where matches: (MQTTEvent) -> Bool) -> Int? {
        events.indices.first { $0 >= after && matches(events[$0]) }
    }

    /// The first event at index >= `after` that matches; waits up to `timeout` for it.
    @discardableResult
    func wait(
        for what: String, after: Int = 0, timeout: Duration = .seconds(10),
        _ matches: (MQTTEvent) -> Bool
    ) async throws -> (index: Int, event: MQTTEvent) {
        let deadline = ContinuousClock.now + timeout
        var next = after
        while true {
            while next < events.count {
                if matches(events[next]) { return (next, events[next]) }
                next += 1
            }
            guard !finished else { throw MQTTError(code: .closed, message: "events ended without \(what); got \(events)") }
            guard ContinuousClock.now < deadline else {
                throw MQTTError(code: .timeout, message: "no \(what) within \(timeout); got \(events)")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Waits until the client's event stream has ended.
    func waitUntilFinished(timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !finished {
            guard ContinuousClock.now < deadline else { throw MQTTError(code: .timeout, message: "events did not end within \(timeout)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// The first message on `topic` at index >= `after`.
    func message(on topic: String, after: Int = 0, timeout: Duration = .seconds(10)) async throws -> (index: Int, message: MQTTMessage) {
        let (index, event) = try await wait(for: "message on \(topic)", after: after, timeout: timeout) {
            if case .message(let m) = $0 { return m.topic == topic }
            return false
        }
        guard case .message(let message) = event else { preconditionFailure("matched a non-message") }
        return (index, message)
    }

    func connected(after: Int = 0, timeout: Duration = .seconds(10)) async throws -> (index: Int, sessionPresent: Bool) {
        let (index, event) = try await wait(for: ".connected", after: after, timeout: timeout) {
            if case .connected = $0 { return true }
            return false
        }
        guard case .connected(let sessionPresent) = event else { preconditionFailure("matched another event") }
        return (index, sessionPresent)
    }

    func disconnected(after: Int = 0, timeout: Duration = .seconds(10)) async throws -> (index: Int, reason: String) {
        let (index, event) = try await wait(for: ".disconnected", after: after, timeout: timeout) {
            if case .disconnected = $0 { return true }
            return false
        }
        guard case .disconnected(let reason) = event else { preconditionFailure("matched another event") }
        return (index, reason)
    }

    /// Payloads (as text) of all messages on `topic` so far, in order.
    func payloads(on topic: String) -> [String] {
        events.compactMap {
            if case .message(let m) = $0, m.topic == topic { return String(decoding: m.payload, as: UTF8.self) }
            return nil
        }
    }

    /// All `.disconnected` reasons so far.
    var disconnectReasons: [String] {
        events.compactMap {
            if case .disconnected(let reason) = $0 { return reason }
            return nil
        }
    }
}

extension MQTTMessage {
    static func text(_ topic: String, _ text: String, qos: MQTTQoS = .atLeastOnce, retain: Bool = false) -> MQTTMessage {
        MQTTMessage(topic: topic, payload: Array(text.utf8), qos: qos, retain: retain)
    }

    var text: String { String(decoding: payload, as: UTF8.self) }
}
