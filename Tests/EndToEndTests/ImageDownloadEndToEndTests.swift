import Crypto
import Foundation
import GatewayAgent
import GatewayProtocol
import Hummingbird
import Logging
import LXD
import NIOCore
import Synchronization
import Testing
import UmockdevTesting

/// A vendor's image server: serves one unified tarball with `Range` support, corrupted or cut short on
/// demand, and records the ranges asked for.
final class ImageServer: Sendable {
    enum Mode: Sendable { case good, corrupt, cutOnce(at: Int) }
    let port: Int
    let image: Data
    let mode: Mutex<Mode>
    let ranges = Mutex<[String]>([])
    let hits = Mutex(0)

    init(port: Int, image: Data, mode: Mode) {
        self.port = port
        self.image = image
        self.mode = Mutex(mode)
    }

    func application() -> some ApplicationProtocol {
        let router = Router()
        router.get("/images/{name}") { [self] req, _ -> Response in
            hits.withLock { $0 += 1 }
            var bytes = image
            switch mode.withLock({ $0 }) {
            case .corrupt: bytes[bytes.count / 2] ^= 0xff
            default: break
            }
            var start = 0
            if let range = req.headers[.range] {
                ranges.withLock { $0.append(range) }
                start = Int(range.dropFirst("bytes=".count).prefix { $0.isNumber }) ?? 0
            }
            let rest = bytes[start...]
            var headers: HTTPFields = [.contentType: "application/octet-stream", .contentLength: "\(rest.count)"]
            if start > 0 { headers[.contentRange] = "bytes \(start)-\(bytes.count - 1)/\(bytes.count)" }
            let status: HTTPResponse.Status = start > 0 ? .partialContent : .ok
            if case .cutOnce(let at) = mode.withLock({ $0 }), start < at {
                mode.withLock { $0 = .good }
                // Half the image, then the connection drops: the gateway must resume, not start over.
                let head = ByteBuffer(data: Data(bytes[start..<at]))
                return Response(status: status, headers: headers, body: ResponseBody { writer in
                    try await writer.write(head)
                    throw CancellationError()
                })
            }
            return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(data: Data(rest))))
        }
        var logger = Logger(label: "image-server")
        logger.logLevel = .critical
        return Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)), logger: logger)
    }
}

extension EndToEndTests {
    /// The busybox test image repacked with a marker file, so that its fingerprint is new to LXD.
    static func freshBusyboxTarball(root: URL) throws -> URL {
        let cache = ProcessInfo.processInfo.environment["IOTGW_IMAGE_CACHE"] ?? "/var/cache/iotgw-images"
        let source = try FileManager.default.contentsOfDirectory(atPath: cache).filter { $0.hasPrefix("busybox-") && $0.hasSuffix(".tar.gz") }.sorted().last
        guard let source else { throw HarnessError("no busybox tarball in \(cache): run scripts/build-image busybox") }
        let work = root.appendingPathComponent("image")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        var r = try run("/bin/tar", ["-xzf", "\(cache)/\(source)", "-C", work.path])
        guard r.status == 0 else { throw HarnessError("tar -x: \(r.stderr)") }
        try "iotgw-e2e \(UUID())\n".write(to: work.appendingPathComponent("rootfs/etc/iotgw-image-marker"), atomically: true, encoding: .utf8)
        let out = root.appendingPathComponent("vendor-image.tar.gz")
        r = try run("/bin/tar", ["-czf", out.path, "-C", work.path, "metadata.yaml", "rootfs"] + (FileManager.default.fileExists(
            atPath: work.appendingPathComponent("templates").path) ? ["templates"] : []))
        guard r.status == 0 else { throw HarnessError("tar -c: \(r.stderr)") }
        return out
    }

    /// A plan naming an image the gateway does not have: a corrupted download is refused with nothing
    /// imported and no container; a download cut in the middle is resumed with a `Range` request; the
    /// image is imported by its fingerprint and the container is created from it; an image URL on a host
    /// the owner did not allow is refused with nothing changed.
    @Test func aVendorsImageIsDownloadedVerifiedResumedAndUsed() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        let tarball = try Self.freshBusyboxTarball(root: root)
        let bytes = try Data(contentsOf: tarball)
        let fingerprint = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
        let server = ImageServer(port: freePort(), image: bytes, mode: .corrupt)
        let vendorID = E2E.vendorID("img")
        let container = ProvisioningPlan.containerName(forVendor: vendorID)
        let issued = Date()
        let imageURL = Shared("http://127.0.0.1:\(server.port)/images/busybox.tar.gz")
        let version = Shared(1)
        let vendor = Attacker(id: vendorID, port: freePort()) { gw in
            ProvisioningPlan(vendor: vendorID, gatewayID: gw, version: version.value, issuedAt: issued, expiresAt: issued.addingTimeInterval(7200),
                             container: ContainerSpec(name: container, image: ImageRef(alias: "vendor-busybox", fingerprint: fingerprint,
                                                                                       url: imageURL.value),
                                                      limits: ResourceLimits(cpus: 1, memoryMiB: 128, diskMiB: 512, processes: 200), network: .none),
                             devices: [DeviceGrant(serial: "IMG-1", vendorID: "1d50", productID: "6018", kind: .unixChar, path: "/dev/ttyUSB0")],
                             apps: [])
        }
        let gateway = try GatewayFixture(vendors: [], root: root, extraVendorsYAML: [vendor.entryYAML(policy: "auto", usbVendorID: "1d50")],
                                         extraYAML: "planSyncSeconds: 1")
        func row() throws -> ControlAPI.Vendor? { try gateway.status().vendors.first { $0.id == vendorID } }
        func imported() async throws -> Bool { try await lxd.listImages().contains { $0.fingerprint == fingerprint } }
        defer { try? FileManager.default.removeItem(at: root) }

        defer { Task { try? await lxd.deleteImage(fingerprint: fingerprint) } }
        try await vendor.serving(lxd, gateway: gateway, containers: [container],
                                 servers: [(server.port, { @Sendable in try await server.application().runService() })]) { testbed in
            let node = try CharNode()
            try testbed.plug(vendorID: "1d50", productID: "6018", serial: "IMG-1", ttyName: "ttyUSB47", devnode: node.path)

            // 1. Corrupted: refused before anything reaches LXD.
            let refused = try await eventually("the corrupted image refused", timeout: .seconds(60)) {
                try row().flatMap { $0.error?.contains("nothing imported") == true ? $0 : nil }
            }
            print("corrupted download: \(refused.error ?? "")")
            #expect(try await imported() == false, "a corrupted download is never imported")
            await #expect(throws: LXDError.self) { try await lxd.instance(container) }

            // 2. Good bytes, but the connection drops halfway once: resumed from where it stopped.
            let half = bytes.count / 2
            server.mode.withLock { $0 = .cutOnce(at: half) }
            _ = try await eventually("the container created from the downloaded image", timeout: .seconds(120)) {
                try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") ? true : nil
            }
            #expect(try await imported())
            let instance = try await lxd.instance(container).instance
            #expect(instance.config["volatile.base_image"] == fingerprint, "created from the fingerprint the vendor signed")
            let resumed = server.ranges.withLock { $0 }
            #expect(resumed.contains { $0.hasPrefix("bytes=") && $0 != "bytes=0-" }, "the cut download was resumed: \(resumed)")
            print("resumed with \(resumed), \(server.hits.withLock { $0 }) requests for \(bytes.count) bytes")
            let partials = try FileManager.default.contentsOfDirectory(atPath: gateway.dir.appendingPathComponent("state/images").path)
            #expect(partials.isEmpty, "no partial download left: \(partials)")

            // 3. An image URL on a host the owner did not allow: refused, nothing changes.
            let before = try await lxd.instance(container).instance.config
            imageURL.update { $0 = "http://localhost:\(server.port)/images/busybox.tar.gz" }
            version.update { $0 += 1 }
            let foreign = try await eventually("the foreign image host refused", timeout: .seconds(30)) {
                try row().flatMap { $0.rejection?.contains("not one the owner allows") == true ? $0 : nil }
            }
            print("foreign image host: \(foreign.rejection ?? "")")
            #expect(try await lxd.instance(container).instance.config == before)
        }
    }
}

/// `ImageFetcher` against a real HTTP server and an in-memory image store: what the end-to-end test
/// above does not reach.
@Suite struct ImageFetcherTests {
    final class Store: ImageStore {
        let present = Mutex<Set<String>>([])
        let imports = Mutex(0)
        func hasImage(fingerprint: String) async throws -> Bool { present.withLock { $0.contains(fingerprint) } }
        func importImage(tarball path: String, fingerprint: String) async throws {
            imports.withLock { $0 += 1 }
            present.withLock { _ = $0.insert(fingerprint) }
        }
    }

    func withServer(_ image: Data, _ body: (ImageServer, URL) async throws -> Void) async throws {
        let server = ImageServer(port: freePort(), image: image, mode: .good)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("imgf-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.application().runService() }
            defer { group.cancelAll() }
            _ = try await eventually("image server listening") { canConnect(port: server.port) ? true : nil }
            try await body(server, dir)
        }
    }

    func fetcher(_ store: Store, _ dir: URL, maxBytes: Int64 = 1 << 30) -> ImageFetcher {
        ImageFetcher(http: .shared, store: store, directory: dir.path, maxBytes: maxBytes, logger: Logger(label: "test"))
    }

    @Test func oneImageInLXDButNoVendorGetsAnothersImageByNamingItsFingerprint() async throws {
        let image = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let fp = SHA256.hash(data: image).map { String(format: "%02x", $0) }.joined()
        try await withServer(image) { server, dir in
            let store = Store()
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let records = try GatewayStore(path: dir.appendingPathComponent("gw.sqlite").path)
            let images = ImageFetcher(http: .shared, store: store, directory: dir.path, maxBytes: 1 << 30, logger: Logger(label: "test"),
                                      records: records)
            let ref = ImageRef(alias: "x", fingerprint: fp, url: "http://127.0.0.1:\(server.port)/images/x")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for vendor in ["acme", "acme", "globex"] { group.addTask { try await images.ensure(ref, vendor: vendor) } }
                try await group.waitForAll()
            }
            #expect(server.hits.withLock { $0 } == 2, "each vendor serves the image once (acme's two asks share one download)")
            #expect(store.imports.withLock { $0 } == 1, "one image in LXD")
            #expect(try await records.imageVendors(fp) == ["acme", "globex"])
            try await images.ensure(ref, vendor: "acme")
            #expect(server.hits.withLock { $0 } == 2, "a vendor that served it is not asked again")

            // initech names the fingerprint, but its server does not have those bytes: it gets nothing.
            server.mode.withLock { $0 = .corrupt }
            await #expect { try await images.ensure(ref, vendor: "initech") } throws: { ($0 as? GatewayError)?.code == .digestMismatch }
            #expect(try await records.imageVendors(fp) == ["acme", "globex"])
            #expect(await images.downloads().isEmpty)

            // The owner's own image (LXD has it, the gateway never downloaded it) is used as it is.
            let owners = String(repeating: "b", count: 64)
            store.present.withLock { _ = $0.insert(owners) }
            try await images.ensure(ImageRef(alias: "y", fingerprint: owners, url: ref.url), vendor: "initech")
            #expect(server.hits.withLock { $0 } == 3)
        }
    }

    @Test func anImageOverTheOwnersLimitIsRefusedUnreadAndLeavesNothing() async throws {
        let image = Data(repeating: 7, count: 2 << 20)
        let fp = SHA256.hash(data: image).map { String(format: "%02x", $0) }.joined()
        try await withServer(image) { server, dir in
            let store = Store()
            let images = fetcher(store, dir, maxBytes: 1 << 20)
            await #expect { try await images.ensure(ImageRef(alias: "x", fingerprint: fp, url: "http://127.0.0.1:\(server.port)/images/x"),
                                                     vendor: "acme") } throws: { e in
                (e as? GatewayError)?.code == .imageDownload && "\(e)".contains("images.maxMiB")
            }
            #expect(server.hits.withLock { $0 } == 1, "not retried")
            #expect(store.imports.withLock { $0 } == 0)
            #expect((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? [] == [])
            await #expect { try await images.ensure(ImageRef(alias: "x", fingerprint: fp), vendor: "acme") } throws: { e in
                (e as? GatewayError)?.code == .imageDownload && "\(e)".contains("names no URL")
            }
        }
    }
}

extension EndToEndTests {
    /// A small pool made for the test, nearly filled from inside the vendor's container: the app update is
    /// deferred with a clear status and a report to the vendor, nothing is snapshotted or converged; once
    /// space is back, it is delivered.
    @Test func aNearlyFullPoolDefersAnUpdateWithAClearStatus() async throws {
        let lxd = try E2E.lxd()
        let root = try E2E.tempRoot()
        defer { try? FileManager.default.removeItem(at: root) }
        let pool = "iotgw-e2e-small-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        let made = try run("/usr/bin/lxc", ["storage", "create", pool, "btrfs", "size=1GiB"])
        guard made.status == 0 else { throw HarnessError("lxc storage create: \(made.stderr)") }
        defer { _ = try? run("/usr/bin/lxc", ["storage", "delete", pool]) }
        let debian = try await lxd.imageAlias("iotgw-debian12-test").target
        let vendorID = E2E.vendorID("dsk")
        let container = ProvisioningPlan.containerName(forVendor: vendorID)
        let issued = Date()
        let version = Shared(1)
        let vendor = Attacker(id: vendorID, port: freePort()) { gw in
            let v = version.value
            return ProvisioningPlan(vendor: vendorID, gatewayID: gw, version: v, issuedAt: issued, expiresAt: issued.addingTimeInterval(7200),
                                    container: ContainerSpec(name: container, image: ImageRef(alias: "iotgw-debian12-test", fingerprint: debian),
                                                             limits: ResourceLimits(cpus: 1, memoryMiB: 256, diskMiB: 600, processes: 300), network: .none),
                                    devices: [DeviceGrant(serial: "DSK-1", vendorID: "1d51", productID: "6018", kind: .unixChar, path: "/dev/ttyUSB0")],
                                    apps: v >= 2 ? [AppSpec(name: "probe", version: "1.0.0", runList: ["recipe[probe]"])] : [])
        }
        let gateway = try GatewayFixture(vendors: [], root: root, extraVendorsYAML: [vendor.entryYAML(policy: "auto", usbVendorID: "1d51")],
                                         storagePool: pool,
                                         extraYAML: "planSyncSeconds: 1\ndisk: {reserveMiB: 200}\n"
                                             + "delivery: {maxRetrySeconds: 2, environment: test, hardening: {enabled: false}}")
        func row() throws -> ControlAPI.Vendor? { try gateway.status().vendors.first { $0.id == vendorID } }
        func free() async throws -> Int64 { try await lxd.storagePoolResources(pool).free >> 20 }

        try await vendor.serving(lxd, gateway: gateway, containers: [container]) { testbed in
            let node = try CharNode()
            try testbed.plug(vendorID: "1d51", productID: "6018", serial: "DSK-1", ttyName: "ttyUSB48", devnode: node.path)
            _ = try await eventually("the container on the small pool", timeout: .seconds(120)) {
                try await E2E.deviceInside(lxd, container, "/dev/ttyUSB0") ? true : nil
            }
            // Fill the pool (as other tenants or images would) to 100 MiB free, under the owner's 200 MiB reserve. The
            // vendor itself cannot: its quota is what the guard let it have.
            let before = try await free()
            let fillFile = "\(ProcessInfo.processInfo.environment["LXD_DIR"] ?? "/var/lib/lxd")/storage-pools/\(pool)/iotgw-e2e-fill"
            defer { unlink(fillFile) }
            let filled = try run("/bin/sh", ["-c", "fallocate -l \(max(1, before - 100))M \(fillFile) && sync"])
            #expect(filled.status == 0, "fallocate: \(filled.stderr)")
            _ = try await eventually("the pool nearly full", timeout: .seconds(60)) { try await free() < 200 ? true : nil }
            print("pool \(pool): \(before) MiB free, \(try await free()) MiB after filling")

            version.update { $0 += 1 }
            let deferred = try await eventually("the update deferred", timeout: .seconds(60)) {
                try row().flatMap { $0.error?.contains("deferred: delivering v2") == true ? $0 : nil }
            }
            print("status: \(deferred.error ?? "")")
            #expect(deferred.error?.contains("storage pool \(pool) has") == true)
            #expect(deferred.deliveredPlanVersion == nil, "nothing delivered into the reserve")
            let snapshots = try await lxd.snapshots(container)
            #expect(snapshots.isEmpty, "no snapshot taken while short of space: \(snapshots.map(\.name))")
            let reported = try await eventually("the vendor told", timeout: .seconds(30)) {
                vendor.recorded("/v1/report").last { String(decoding: $0.body, as: UTF8.self).contains("deferred") }
            }
            #expect(String(decoding: reported.body, as: UTF8.self).contains("\"failed\""))

            // Space back: the deferred update goes through by itself.
            #expect(unlink(fillFile) == 0)
            sync()
            _ = try await eventually("the update delivered once space is back", timeout: .seconds(120)) {
                try row().flatMap { $0.deliveredPlanVersion == 2 ? $0 : nil }
            }
        }
    }
}
