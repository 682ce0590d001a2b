import Foundation
import NIOCore
import Testing
@testable import LXD

@Suite(.serialized) struct LXDDeviceTests {
    /// A real char node on the host (same major/minor as /dev/zero), like a USB serial adapter's tty.
    static func withCharNode<R>(_ body: (String) async throws -> R) async throws -> R {
        let path = "/dev/t-iotgw-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        guard mknod(path, S_IFCHR | 0o660, dev_t((1 << 8) | 5)) == 0 else {
            Issue.record("mknod \(path) failed (errno \(errno)): tests must run as root")
            throw LXDError(code: .invalidArgument, message: "mknod failed")
        }
        defer { unlink(path) }
        return try await body(path)
    }

    @Test func hotplugUnixCharInAndOut() async throws {
        try await Self.withCharNode { node in
            try await TestLXD.withInstance("dev") { lxd, name in
                try await lxd.addDevice(name, name: "serial0", .unixChar(source: node, path: "/dev/ttyUSB0"))
                #expect(try await lxd.instance(name).instance.devices["serial0"]?["source"] == node)
                let inside = try await lxd.exec(name, ["sh", "-c", "ls -l /dev/ttyUSB0 && head -c 4 /dev/ttyUSB0 | wc -c"])
                #expect(inside.exitCode == 0)
                #expect(inside.stdout.hasPrefix("c"))
                #expect(inside.stdout.hasSuffix("4\n"))

                try await lxd.removeDevice(name, name: "serial0")
                #expect(try await lxd.instance(name).instance.devices["serial0"] == nil)
                #expect(try await lxd.exec(name, ["test", "-e", "/dev/ttyUSB0"]).exitCode == 1)
                try await lxd.removeDevice(name, name: "serial0")  // idempotent
            }
        }
    }

    @Test func usbNicAndDiskDevices() async throws {
        let hostDir = FileManager.default.temporaryDirectory.appendingPathComponent("lxd-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: hostDir, withIntermediateDirectories: true)
        try "from-host\n".write(to: hostDir.appendingPathComponent("hello"), atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: hostDir) }
        try await TestLXD.withInstance("usb") { lxd, name in
            // No USB bus here: a usb device with required=false is accepted and waits for a match.
            try await lxd.addDevice(name, name: "ftdi", .usb(vendorID: "0403", productID: "6001"))
            // A second NIC on the same managed bridge would clash on the instance DNS name: use a p2p veth.
            try await lxd.addDevice(name, name: "eth1", Device(["type": "nic", "nictype": "p2p", "name": "eth1"]))
            try await lxd.addDevice(name, name: "data", .disk(path: "/data", source: hostDir.path, readonly: true))
            let devs = try await lxd.instance(name).instance.devices
            #expect(devs["ftdi"] == .usb(vendorID: "0403", productID: "6001"))
            #expect(devs["eth1"]?.type == "nic")
            #expect(try await lxd.exec(name, ["cat", "/data/hello"]).stdout == "from-host\n")
            #expect(try await lxd.exec(name, ["ip", "link", "show", "eth1"]).exitCode == 0)
            for d in ["ftdi", "eth1", "data"] { try await lxd.removeDevice(name, name: d) }
            #expect(try await lxd.instance(name).instance.devices.isEmpty)
            #expect(try await lxd.exec(name, ["test", "-e", "/data/hello"]).exitCode == 1)
        }
    }

    @Test func snapshotsCreateRestoreDelete() async throws {
        try await TestLXD.withInstance("snap") { lxd, name in
            try await lxd.push(name, path: "/root/version", string: "v1")
            try await lxd.createSnapshot(name, name: "before-update")
            try await lxd.push(name, path: "/root/version", string: "v2")
            #expect(try await lxd.snapshots(name).map(\.name) == ["before-update"])

            try await lxd.stop(name, timeout: 5, force: true)
            try await lxd.restoreSnapshot(name, name: "before-update")
            try await lxd.start(name)
            #expect(String(buffer: try await lxd.pull(name, path: "/root/version").content) == "v1")

            try await lxd.deleteSnapshot(name, name: "before-update")
            #expect(try await lxd.snapshots(name).isEmpty)
            await #expect { try await lxd.restoreSnapshot(name, name: "before-update") } throws: {
                let e = $0 as? LXDError
                return e?.code == .notFound || e?.code == .operationFailed || e?.code == .badRequest
            }
            await #expect { try await lxd.createSnapshot(name, name: "a/b") } throws: { ($0 as? LXDError)?.code == .invalidName }
        }
    }
}

@Suite(.serialized) struct LXDProfileImageEventTests {
    @Test func profileCRUDAndEnsureFromYAML() async throws {
        let lxd = try TestLXD.client()
        let name = "t-prof-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        let yaml = FileManager.default.temporaryDirectory.appendingPathComponent("\(name).yaml")
        try "description: test\nconfig:\n  limits.processes: 100\n".write(to: yaml, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: yaml) }
        do {
            #expect(try await lxd.ensureProfile(name, yamlFile: yaml.path))
            #expect(try await lxd.ensureProfile(name, yamlFile: yaml.path) == false)  // no change, no write
            #expect(try await lxd.profile(name).profile.config == ["limits.processes": "100"])
            await #expect { try await lxd.createProfile(name, ProfilePut()) } throws: { ($0 as? LXDError)?.code == .conflict }

            let (_, etag) = try await lxd.profile(name)
            try await lxd.updateProfile(name, ProfilePut(description: "changed"), ifMatch: etag)
            #expect(try await lxd.profile(name).profile.description == "changed")
            await #expect { try await lxd.updateProfile(name, ProfilePut(), ifMatch: etag) } throws: {
                ($0 as? LXDError)?.code == .preconditionFailed
            }
            #expect(try await lxd.listProfiles().contains { $0.name == name })
            try await lxd.deleteProfile(name)
            await #expect { try await lxd.profile(name) } throws: { ($0 as? LXDError)?.code == .notFound }
        } catch {
            try? await lxd.deleteProfile(name)
            throw error
        }
    }

    /// Builds a tiny unified image tarball (metadata.yaml + rootfs/) with tar.
    static func makeTarball(marker: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("img-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("rootfs/etc"), withIntermediateDirectories: true)
        try "architecture: x86_64\ncreation_date: \(Int(Date().timeIntervalSince1970))\nproperties:\n  description: \(marker)\n"
            .write(to: dir.appendingPathComponent("metadata.yaml"), atomically: true, encoding: .utf8)
        try marker.write(to: dir.appendingPathComponent("rootfs/etc/marker"), atomically: true, encoding: .utf8)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("\(marker).tar.gz")
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/bin/tar")
        tar.arguments = ["-czf", out.path, "-C", dir.path, "metadata.yaml", "rootfs"]
        try tar.run()
        tar.waitUntilExit()
        try FileManager.default.removeItem(at: dir)
        #expect(tar.terminationStatus == 0)
        return out
    }

    @Test func imageImportAliasVerifyDelete() async throws {
        let lxd = try TestLXD.client()
        let marker = "t-img-\(UUID().uuidString.prefix(8).lowercased())"
        let tarball = try Self.makeTarball(marker: marker)
        defer { try? FileManager.default.removeItem(at: tarball) }
        let sha = try await LXDClient.sha256(ofFile: tarball.path)

        await #expect { try await lxd.importImage(tarball: tarball.path, expectedFingerprint: String(repeating: "0", count: 64)) } throws: {
            ($0 as? LXDError)?.code == .fingerprintMismatch
        }
        #expect(try await lxd.listImages().contains { $0.fingerprint == sha } == false)

        let progress = ProgressLog()
        let fp = try await lxd.importImage(tarball: tarball.path, expectedFingerprint: sha, progress: { progress.record($0) })
        do {
            #expect(fp == sha)
            #expect(progress.last == Int64(try FileManager.default.attributesOfItem(atPath: tarball.path)[.size] as! Int))
            #expect(try await lxd.image(fingerprint: fp).properties["description"] == marker)
            try await lxd.createImageAlias(marker, target: fp, description: "test")
            try await lxd.verifyImage(alias: marker, fingerprint: fp)
            await #expect { try await lxd.verifyImage(alias: TestLXD.busybox, fingerprint: fp) } throws: {
                ($0 as? LXDError)?.code == .fingerprintMismatch
            }
            await #expect { try await lxd.createImageAlias(marker, target: fp) } throws: { ($0 as? LXDError)?.code == .conflict }
            #expect(try await lxd.importImage(tarball: tarball.path) == fp)  // already there: no second upload
            try await lxd.deleteImageAlias(marker)
            try await lxd.deleteImage(fingerprint: fp)
            #expect(try await lxd.listImages().contains { $0.fingerprint == fp } == false)
            await #expect { try await lxd.imageAlias(marker) } throws: { ($0 as? LXDError)?.code == .notFound }
        } catch {
            try? await lxd.deleteImageAlias(marker)
            try? await lxd.deleteImage(fingerprint: fp)
            throw error
        }
    }

    @Test func lifecycleEventsOverTheWebsocket() async throws {
        let lxd = try TestLXD.client()
        let name = "t-evt-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try await TestLXD.cleaningUp([name]) {
            let seen = try await lxd.withEvents([.lifecycle]) { events in
                try await lxd.createInstance(InstancesPost(name: name, source: .image(alias: TestLXD.busybox)))
                try await lxd.start(name)
                var actions: [String] = []
                for try await e in events where e.source == "/1.0/instances/\(name)" {
                    #expect(e.type == "lifecycle")
                    actions.append(e.action ?? "")
                    if e.action == "instance-started" { break }
                }
                return actions
            }
            #expect(seen.contains("instance-created"))
            #expect(seen.last == "instance-started")
        }
    }
}
