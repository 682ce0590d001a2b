import Synchronization

/// A value delivered once, from any thread, to one awaiting task: libmosquitto's callbacks complete
/// it (PUBACK, SUBACK, CONNACK), the awaiting task may give up first (timeout, cancellation).
/// Whoever completes it first wins; later completions are ignored.
final class Promise<Value: Sendable>: Sendable {
    private enum State {
        case pending
        case waiting(CheckedContinuation<Value, any Error>)
        case done(Result<Value, any Error>)
    }

    private let state = Mutex<State>(.pending)

    /// Completes the promise unless it is already complete.
    func complete(_ result: Result<Value, any Error>) {
        let waiter: CheckedContinuation<Value, any Error>? = state.withLock { state in
            switch state {
            case .pending:
                state = .done(result)
                return nil
            case .waiting(let continuation):
                state = .done(result)
                return continuation
            case .done:
                return nil
            }
        }
        waiter?.resume(with: result)
    }

    /// The value; cancelling the awaiting task completes the promise with `CancellationError`.
    /// Only one task may await a promise.
    var value: Value {
        get async throws {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
                    let ready: Result<Value, any Error>? = state.withLock { state in
                        switch state {
                        case .pending:
                            state = .waiting(continuation)
                            return nil
                        case .done(let result):
                            return result
                        case .waiting:
                            // A second awaiter is a bug in this module; fail it rather than lose it.
                            return .failure(MQTTError(code: .library, message: "internal: a promise was awaited twice"))
                        }
                    }
                    if let ready { continuation.resume(with: ready) }
                }
            } onCancel: {
                self.complete(.failure(CancellationError()))
            }
        }
    }

    /// The value, or the error `onTimeout` makes if it takes longer than `timeout`.
    func value(timeout: Duration, onTimeout: @escaping @Sendable () -> MQTTError) async throws -> Value {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await Task.sleep(for: timeout)
                self.complete(.failure(onTimeout()))
            }
            defer { group.cancelAll() }
            return try await self.value
        }
    }
}
