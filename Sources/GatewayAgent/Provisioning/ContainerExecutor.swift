import GatewayProtocol
import Logging
import LXD

/// Performs planned steps against LXD, journaling each before and after, so a crash leaves a
/// record of where it stopped; every step is idempotent, so re-planning after a restart resumes.
public struct ContainerExecutor: Sendable {
    let lxd: LXDClient
    let store: GatewayStore
    let logger: Logger

    public init(lxd: LXDClient, store: GatewayStore, logger: Logger) {
        self.lxd = lxd
        self.store = store
        self.logger = logger
    }

    public func observe(_ name: String) async throws -> ContainerObservation {
        do {
            return ContainerObservation(try await lxd.instance(name).instance)
        } catch let e as LXDError where e.code == .notFound {
            return .absent
        }
    }

    /// Runs the steps in order; stops at the first failure and rethrows it.
    public func run(_ steps: [ProvisionStep], vendor: String, container: String) async throws {
        for step in steps {
            try await store.journal(vendor: vendor, step: step.description, status: "started")
            do {
                try await perform(step, container: container)
                try await store.journal(vendor: vendor, step: step.description, status: "done")
                logger.info("provision step done", metadata: ["iotgw.vendor": "\(vendor)", "iotgw.step": "\(step)"])
            } catch {
                try await store.journal(vendor: vendor, step: step.description, status: "failed", detail: "\(error)")
                logger.warning("provision step failed",
                               metadata: ["iotgw.vendor": "\(vendor)", "iotgw.step": "\(step)", "iotgw.error": "\(error)"])
                throw error
            }
        }
    }

    func perform(_ step: ProvisionStep, container: String) async throws {
        switch step {
        case .verifyImage(let alias, let fingerprint):
            try await lxd.verifyImage(alias: alias, fingerprint: fingerprint)
        case .create(let s):
            do {
                try await lxd.createInstance(s.post)
            } catch let e as LXDError where e.code == .conflict || e.message.contains("already exists") {
                // A create that finished while we were down: the next observation sees it.
                logger.info("container already exists", metadata: ["lxd.instance": "\(container)"])
            }
        case .updateConfig(let c):
            try await lxd.patchInstance(container, config: c)
        case .start:
            do {
                try await lxd.start(container)
            } catch let e as LXDError where e.message.contains("already running") {
                return
            }
        case .attach(let name, let device):
            try await lxd.addDevice(container, name: name, device)
        case .detach(let name):
            try await lxd.removeDevice(container, name: name)
        }
    }
}
