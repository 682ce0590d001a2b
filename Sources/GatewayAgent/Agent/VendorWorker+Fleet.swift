import Foundation
import GatewayProtocol
import LXD

// What the fleet channel asks of a vendor's worker: its slice of the gateway as a status, and the
// vendor's commands. Nothing here reads or touches another vendor's container, devices or plans.
extension VendorWorker {
    /// The vendor's broker connection came up or went down.
    public func fleetConnection(_ up: Bool) {
        fleetConnected = up
        // Polling goes back to (or leaves) the shorter interval: the next tick computes when.
        exchangeNextLook = nil
    }

    /// The status's stable part (no metrics, no times): what is compared to decide whether to publish.
    public func statusFacts() async throws -> GatewayStatus {
        let versions = try await store.planVersions(vendor.id)
        let state = try await store.vendorState(vendor.id)
        var attached = Set<String>()
        for d in try await store.devices() where d.vendor == vendor.id && d.present && d.state == .attached {
            if let s = d.serial, Fields.serial.isValid(s) { attached.insert(s) }
        }
        var last: GatewayStatus.LastDelivery?
        if let json = state?.lastDelivery, let version = state?.deliveredVersion,
           let r = try? WireJSON.decoder().decode(DeliveryReport.self, from: Data(json.utf8)) {
            last = .init(planVersion: version, result: r.result.rawValue,
                         failingControls: r.failingControls.prefix(GatewayStatus.maxControls).map { Fields.displayText($0, max: 256) },
                         at: state?.updatedAt ?? now)
        }
        let plan = GatewayStatus.PlanVersions(received: versions.received, approved: versions.approved, applied: state?.appliedVersion,
                                              delivered: state?.deliveredVersion, pending: versions.pending)
        return GatewayStatus(gatewayID: env.identity.id, vendor: vendor.id, online: true, session: 0, sequence: 0, publishedAt: .distantPast,
                             agentVersion: GatewayAgent.version, uptimeSeconds: 0, container: nil, devices: attached.sorted(), plan: plan,
                             lastDelivery: last, rejection: state?.rejection.map { Fields.displayText($0, max: 1024) })
    }

    /// The vendor's own container as LXD reports it now (state and use of CPU, memory and disk).
    public func containerStatus() async -> GatewayStatus.Container {
        do {
            let s = try await env.host.state(container)
            return .init(name: container, state: Fields.name.isValid(s.status) ? s.status : "Unknown",
                         cpuSeconds: s.cpu.map { Double($0.usage) / 1e9 }, memoryBytes: s.memory?.usage,
                         diskBytes: s.disk?["root"]?.usage, processes: s.processes)
        } catch let e as LXDError where e.code == .notFound {
            return .init(name: container, state: "Absent")
        } catch {
            return .init(name: container, state: "Unknown")
        }
    }

    /// `restart-container`: restarts the vendor's own container, between other container changes.
    public func restartContainer() async throws {
        try await containerLock.withLock {
            try await env.host.setState(container, .restart, timeout: 60, force: false)
        }
        try await store.journal(vendor: vendor.id, step: "restart (vendor command)", status: "done")
        kickReconcile()
    }

    /// `redeliver`: the current plan's apps go through delivery again (snapshot, converge, validate).
    /// Returns false when there is nothing delivered to repeat.
    public func redeliver() async throws -> Bool {
        guard let plan = try await approvedPlan(), !plan.apps.isEmpty else { return false }
        try await store.requestRedelivery(vendor.id)
        kickDelivery()
        return true
    }

    /// `resync`: fetch the plan over HTTP now.
    public func resync() { requestSync() }
}
