import Logging
import ServiceLifecycle

/// Drives every active rollout (``RolloutService/drive(logger:)``) every `interval` until shutdown. Each
/// `iot-daemon serve` replica runs one; their passes are safe to overlap.
public struct RolloutDriver: Service {
    let rollouts: RolloutService
    let interval: Duration
    let logger: Logger

    public init(rollouts: RolloutService, interval: Duration = .seconds(1), logger: Logger) {
        self.rollouts = rollouts
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do { try await rollouts.drive(logger: logger) } catch {
                logger.warning("rollouts not driven", metadata: ["error.message": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}
