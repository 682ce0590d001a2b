import Foundation
import GatewayProtocol
import Hummingbird
import HummingbirdCore
import Logging
import LXD
import NIOCore
import NIOFoundationCompat
import NIOPosix
import ServiceLifecycle

/// Builds the owner's control API served on the control socket.
public enum ControlServer {
    /// The socket's directory is made mode 0700 (root only) before binding: the socket inherits no
    /// wider access than its directory grants.
    public static func prepareSocketDirectory(_ socketPath: String) throws {
        let dir = (socketPath as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard chmod(dir, 0o700) == 0 else { throw ConfigError("cannot restrict \(dir) to root (errno \(errno))") }
    }

    /// The control API as a service: the owner's requests on the control socket until graceful shutdown.
    public static func build(agent: GatewayAgent, logger: Logger) throws -> any Service {
        try prepareSocketDirectory(agent.config.controlSocket)
        let views = ControlViews(agent: agent)
        let router = Router()
        router.get("/v1/status") { _, _ in try json(try await views.status()) }
        router.get("/v1/approvals") { req, _ in
            let all = req.uri.queryParameters.get("all") == "true"
            return try json(try await views.approvals(pendingOnly: !all))
        }
        router.get("/v1/approvals/{id}") { _, ctx in
            let id = try ctx.parameters.require("id", as: Int64.self)
            guard let a = try await views.approval(id) else { return error(.notFound, "notFound", "no approval \(id)") }
            return try json(a)
        }
        router.post("/v1/approvals/{id}/decision") { req, ctx in
            let id = try ctx.parameters.require("id", as: Int64.self)
            let body = try await req.body.collect(upTo: 4096)
            guard let d = try? JSONDecoder().decode(ControlAPI.Decision.self, from: body) else {
                return error(.badRequest, "badRequest", "body must be {\"approve\": true|false, \"digest\": \"...\"}")
            }
            guard !d.approve || d.digest != nil else {
                return error(.badRequest, "digestRequired", "approving needs the digest of the plan shown (iot-gateway approve sends it)")
            }
            do {
                try await agent.store.decide(planID: id, approve: d.approve, by: "owner", digest: d.digest)
            } catch let e as GatewayError {
                switch e.code {
                case .notFound: return error(.notFound, "notFound", e.message)
                case .digestMismatch: return error(.conflict, "digestMismatch", e.message)
                default: return error(.conflict, "notPending", e.message)
                }
            }
            try await agent.decided(planID: id)
            guard let a = try await views.approval(id) else { return error(.notFound, "notFound", "no approval \(id)") }
            return try json(a)
        }
        router.get("/v1/vendors") { _, _ in try json(try await views.vendors()) }
        // The gateway's own metrics in the Prometheus text format (the owner's; there is no network listener).
        router.get("/v1/metrics") { _, _ in
            let bytes = try await views.metrics()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        router.get("/v1/devices") { _, _ in try json(try await views.devices()) }
        // The owner ends a vendor's live log relay.
        router.post("/v1/vendors/{id}/logs-stop") { _, ctx in
            let id = try ctx.parameters.require("id")
            guard agent.config.vendor(id: id) != nil else { return error(.notFound, "notFound", "no vendor \(Fields.quote(id))") }
            guard let channel = agent.channel(id) else { return error(.conflict, "noFleet", "vendor \(id) has no fleet channel") }
            return try json(ControlAPI.Stopped(stopped: await channel.ownerStopsRelay()))
        }
        // Containers of vendors no longer configured, and their removal by the owner.
        router.get("/v1/orphans") { _, _ in try json(try await agent.orphans.orphans()) }
        router.post("/v1/vendors/{id}/remove") { _, ctx in
            let id = try ctx.parameters.require("id")
            guard Fields.vendorID.isValid(id) else { return error(.badRequest, "badRequest", "vendor must be \(Fields.vendorID.form)") }
            do {
                return try json(ControlAPI.Removed(containers: try await agent.orphans.remove(vendor: id)))
            } catch let e as GatewayError where e.code == .conflict {
                return error(.conflict, "stillConfigured", e.message)
            }
        }
        return try serve(router.buildResponder(), on: agent.config.controlSocket, logger: logger)
    }

    /// Serves `responder` on the control socket as Hummingbird's `Application` does, without what an idle
    /// gateway cannot afford: `Application` also runs a task that formats the date every second for the
    /// `Date` header, which woke the idle daemon each second and kept its calendar and time-zone code (and
    /// ICU's) resident after every idle trim. The owner's few requests format their date when they come.
    static func serve(_ responder: some HTTPResponder<BasicRequestContext>, on socketPath: String, logger: Logger) throws -> any Service {
        try HTTPServerBuilder.http1().buildServer(
            configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: "iot-gateway-client"),
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger
        ) { request, writer, channel in
            let context = BasicRequestContext(source: .init(channel: channel, logger: logger))
            var response: Response
            // The router answers its own errors (HTTPResponseError: 404, 405, a bad parameter); anything else is a 500.
            do { response = try await responder.respond(to: request, context: context) } catch {
                logger.debug("control request failed", metadata: ["iotgw.error": "\(error.safeDescription)"])
                response = Response(status: .internalServerError)
            }
            response.headers[.date] = HTTPDate.now()
            response.headers[.server] = "iot-gateway-client"
            try await writer.write(response: response.head, body: response.body)
        }
    }

    static func json(_ value: some Encodable) throws -> Response {
        let data = try ControlAPI.encoder().encode(value)
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: data)))
    }

    static func error(_ status: HTTPResponse.Status, _ code: String, _ message: String) -> Response {
        let data = (try? ControlAPI.encoder().encode(ErrorBody(code: code, message: message))) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: data)))
    }
}

/// An HTTP date (RFC 9110's IMF-fixdate), formatted by the C library: no calendar or ICU code.
enum HTTPDate {
    static func now() -> String {
        var t = time(nil), parts = tm()
        gmtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBufferPointer { strftime($0.baseAddress, $0.count, "%a, %d %b %Y %H:%M:%S GMT", &parts) }
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Read-side views for the owner, assembled from the store and LXD.
struct ControlViews: Sendable {
    let agent: GatewayAgent

    func approval(_ id: Int64) async throws -> ControlAPI.Approval? {
        guard let rec = try await agent.store.plan(id: id) else { return nil }
        return try await view(rec)
    }

    func approvals(pendingOnly: Bool) async throws -> [ControlAPI.Approval] {
        var out: [ControlAPI.Approval] = []
        for rec in try await agent.store.plans(decision: pendingOnly ? .pending : nil) { out.append(try await view(rec)) }
        return out
    }

    func view(_ rec: PlanRecord) async throws -> ControlAPI.Approval {
        let plan = try GatewayAgent.decodePlan(rec)
        let vendor = agent.config.vendor(id: rec.vendor)
        var verified = false
        if let vendor, let key = try? Keys.decodePublic(vendor.publicKey),
           let signed = try? WireJSON.decoder().decode(SignedPlan.self, from: rec.signedJSON),
           let payload = Data(base64Encoded: signed.payload), let sig = Data(base64Encoded: signed.signature) {
            verified = key.isValidSignature(sig, for: payload)
        }
        let devices = try await agent.store.devices()
        let lines = plan.devices.map { g in
            ControlAPI.Approval.DeviceLine(serial: g.serial, kind: g.kind.rawValue, usbID: "\(g.vendorID):\(g.productID)",
                                           hostNode: Self.hostNode(g, devices),
                                           containerPath: g.kind == .unixChar ? g.path : Self.hostNode(g, devices) ?? "its /dev/bus/usb node")
        }
        // What this plan changes from the one approved before (only where it is not that one).
        var approvedVersion: Int?, changes: [String]?
        if let state = try await agent.store.vendorState(rec.vendor), let aid = state.approvedPlanID, aid != rec.id,
           let approvedRec = try await agent.store.plan(id: aid) {
            approvedVersion = approvedRec.version
            changes = plan.grant.differences(from: try GatewayAgent.decodePlan(approvedRec).grant)
        }
        let l = plan.container.limits
        return ControlAPI.Approval(id: rec.id ?? 0, vendor: rec.vendor, vendorName: vendor?.name, planVersion: rec.version,
                                   decision: rec.decision.rawValue, decidedBy: rec.decidedBy, receivedAt: rec.receivedAt,
                                   expiresAt: plan.expiresAt, signatureVerified: verified, container: plan.container.name,
                                   image: plan.container.image.alias, imageFingerprint: plan.container.image.fingerprint,
                                   cpus: l.cpus, memoryMiB: l.memoryMiB, diskMiB: l.diskMiB, processes: l.processes,
                                   network: plan.container.network.rawValue, privileged: false, nesting: agent.config.caps.allowNesting,
                                   devices: lines,
                                   apps: plan.apps.map { .init(name: $0.name, version: $0.version, runList: $0.runList,
                                                               inspecProfile: agent.config.delivery.profiles[$0.name] ?? $0.inspecProfile) },
                                   digest: rec.payloadSHA256, approvedPlanVersion: approvedVersion, changes: changes)
    }

    /// The node that will be passed in: the tty for `unix-char` grants, the USB device node otherwise.
    static func hostNode(_ g: DeviceGrant, _ devices: [DeviceRecord]) -> String? {
        let plugged = devices.filter { $0.serial == g.serial && $0.vendorID == g.vendorID && $0.productID == g.productID && $0.present }
        let wanted = g.kind == .unixChar ? "tty" : "usb"
        return plugged.first { $0.subsystem == wanted }?.devnode
    }

    func devices() async throws -> [ControlAPI.Device] {
        try await agent.store.devices().map { d in
            ControlAPI.Device(syspath: d.syspath, subsystem: d.subsystem, devnode: d.devnode,
                              usbID: d.vendorID.map { "\($0):\(d.productID ?? "?")" }, serial: d.serial, product: d.product,
                              vendor: d.vendor, present: d.present, state: d.state.rawValue, error: d.lastError)
        }
    }

    func vendors() async throws -> [ControlAPI.Vendor] {
        let states = Dictionary(uniqueKeysWithValues: try await agent.store.vendorStates().map { ($0.vendor, $0) })
        let devices = try await agent.store.devices()
        var out: [ControlAPI.Vendor] = []
        for v in agent.config.vendors {
            let s = states[v.id]
            var approvedVersion: Int?
            if let pid = s?.approvedPlanID { approvedVersion = try await agent.store.plan(id: pid)?.version }
            let name = ProvisioningPlan.containerName(forVendor: v.id)
            var status: String? = nil
            var addresses: [String] = []
            if s?.approvedPlanID != nil {
                do {
                    let st = try await agent.host.state(name)
                    status = st.status
                    addresses = st.ipv4Addresses
                } catch let e as LXDError where e.code == .notFound {
                    status = "absent"
                } catch {
                    status = "unknown"
                }
            }
            var delivery: String? = nil
            var failing: [String] = []
            var phases: [DeliveryPhase]?
            var startedAt: Date?
            if let json = s?.lastDelivery, let r = try? WireJSON.decoder().decode(DeliveryReport.self, from: Data(json.utf8)) {
                delivery = "\(r.result.rawValue): \(r.message)"
                failing = r.failingControls
                phases = r.phases
                startedAt = r.startedAt
            }
            let txn = try await agent.store.deliveryTransaction(v.id)
            let channel = agent.channel(v.id)
            var fleet: String?
            var relay: Bool?
            if let channel { (fleet, relay) = await (channel.isConnected ? "connected" : "disconnected", channel.isRelaying) }
            out.append(ControlAPI.Vendor(id: v.id, name: v.name, policy: v.policy.rawValue, daemonURL: v.daemonURL,
                                         lastPlanVersion: s?.lastVersion, approvedPlanVersion: approvedVersion,
                                         appliedPlanVersion: s?.appliedVersion, container: s?.approvedPlanID != nil ? name : nil,
                                         containerStatus: status, addresses: addresses,
                                         attachedDevices: Set(devices.filter { $0.vendor == v.id && $0.state == .attached && $0.present }
                                             .compactMap(\.serial)).sorted(),
                                         error: s?.lastError, deliveredPlanVersion: s?.deliveredVersion, delivery: delivery,
                                         failingControls: failing, rejection: s?.rejection, rejectedAt: s?.rejectedAt,
                                         deliveryPhase: txn.map { "v\($0.planVersion) \($0.phase.rawValue)" }, nextDeliveryAt: s?.nextDeliveryAt,
                                         fleet: fleet, logRelay: relay, deliveryPhases: phases, deliveryStartedAt: startedAt))
        }
        return out
    }

    /// The agent's metrics, with the point-in-time gauges (pending approvals, fleet connections) set now.
    func metrics() async throws -> [UInt8] {
        let metrics = agent.metrics
        metrics.pendingApprovals(try await agent.store.plans(decision: .pending).count)
        for v in agent.config.vendors {
            if let channel = agent.channel(v.id) { metrics.fleetConnected(vendor: v.id, await channel.isConnected) }
        }
        return metrics.exposition()
    }

    func status() async throws -> ControlAPI.Status {
        // What the agent knows first: while LXD is down its work waits, and the owner sees since when.
        var lxdState: String
        let down = agent.lxd.down()
        if let down {
            lxdState = down.description
        } else {
            do { lxdState = "up, LXD " + (try await agent.host.server().environment?.serverVersion ?? "?") } catch {
                lxdState = "down: \(error.safeDescription)"
            }
        }
        let downloads = await agent.environment.images?.downloads() ?? []
        return ControlAPI.Status(gatewayID: agent.identity.id, publicKey: agent.identity.publicKey, lxd: lxdState,
                                 vendors: try await vendors(), devices: try await devices(),
                                 pendingApprovals: try await approvals(pendingOnly: true), imageDownloads: downloads.isEmpty ? nil : downloads,
                                 lxdDownSince: down?.since)
    }
}
