import Foundation
import Testing
@testable import LXD

/// Decoding of responses captured from the real LXD 5.0.2 daemon (see Fixtures/).
@Suite struct LXDWireTests {
    @Test func decodesServerInfo() throws {
        let s = try Fixture.metadata("server", as: Server.self)
        #expect(s.apiVersion == "1.0")
        #expect(s.environment?.serverVersion == "5.0.2")
        for ext in LXDClient.requiredExtensions { #expect(s.apiExtensions.contains(ext)) }
    }

    @Test func decodesInstanceWithDevicesAndProfiles() throws {
        let i = try Fixture.metadata("instance", as: Instance.self)
        #expect(i.name == "fx-capture")
        #expect(i.isRunning)
        #expect(i.profiles == ["default", "iotgw-vendor"])
        #expect(i.expandedConfig["security.idmap.isolated"] == "true")
        #expect(i.expandedDevices["eth0"]?.type == "nic")
        #expect(i.put.profiles == i.profiles)
    }

    @Test func readsTheHostIdsOfTheIdMapLXDRecorded() throws {
        let i = try Fixture.metadata("instance", as: Instance.self)
        // Isolated: 65,536 uids and as many gids from 1,065,536, as LXD recorded them.
        #expect(i.hostIDRanges.map(\.uid) == [true, false])
        #expect(i.hostIDRanges.map(\.ids) == [1_065_536..<1_131_072, 1_065_536..<1_131_072])
        var next = i
        next.config["volatile.idmap.next"] = next.config["volatile.idmap.next"]?.replacingOccurrences(of: "1065536", with: "1131072")
        #expect(!i.sharesHostIDs(with: next))
        #expect(i.sharesHostIDs(with: i))
        var unreadable = i
        unreadable.config["volatile.idmap.next"] = "not json"
        #expect(unreadable.hostIDRanges.isEmpty)
    }

    @Test func aResetOfLXDsFileServerIsToldApartFromAnAnswer() {
        // As LXD 5.0 answered a file pull in CI (December 4), and as it answers for a missing file.
        #expect(LXDError(code: .serverError, status: 500,
                         message: "read unix @->/proc/self/fd/249/forkfile.sock: read: connection reset by peer").isFileServerReset)
        #expect(!LXDError(code: .notFound, status: 404, message: "not found").isFileServerReset)
        #expect(!LXDError(code: .serverError, status: 500, message: "connection reset by peer").isFileServerReset)
    }

    @Test func decodesStateAndPicksGlobalIPv4() throws {
        let st = try Fixture.metadata("instance-state", as: InstanceState.self)
        #expect(st.statusCode == 103)
        #expect(st.network?["lo"] != nil)
        #expect(!st.ipv4Addresses.contains("127.0.0.1"))
        #expect(st.ipv4Addresses.allSatisfy { $0.hasPrefix("10.203.57.") })
    }

    @Test func errorEnvelopeKeepsLXDsText() throws {
        let e = try JSONDecoder().decode(ErrorEnvelope.self, from: Fixture.data("error-not-found"))
        #expect(e.errorCode == 404)
        let err = LXDError.fromHTTP(status: e.errorCode ?? 0, message: e.error ?? "")
        #expect(err.code == .notFound)
        #expect(err.message.contains("not found"))
    }

    @Test func execOperationCarriesReturnAndOutputPaths() throws {
        let async = try JSONDecoder().decode(ResponseEnvelope<LXDOperation>.self, from: Fixture.data("exec-async"))
        #expect(async.type == "async")
        #expect(async.operation.hasPrefix("/1.0/operations/"))
        let done = try Fixture.metadata("exec-operation-done", as: LXDOperation.self)
        #expect(done.isFinal && done.statusCode == 200)
        #expect(done.metadata?["return"]?.intValue == 3)
        // LXD 5.0 log path, taken verbatim (5.15+ moved it under logs/exec-output/).
        #expect(done.metadata?["output"]?["1"]?.stringValue?.hasPrefix("/1.0/instances/fx-capture/logs/exec_") == true)
    }

    @Test func commandNotFoundFailsTheOperationWith127() throws {
        let op = try Fixture.metadata("exec-operation-notfound", as: LXDOperation.self)
        #expect(op.statusCode == 400)
        #expect(op.metadata?["return"]?.intValue == 127)
        #expect(throws: LXDError.self) { try LXDClient.finished(op) }
        let mapped = LXDClient.execFailure(LXDError(code: .operationFailed, status: 400, message: op.err), command: ["nosuchcmd"])
        #expect(mapped.code == .commandNotFound)
        #expect(mapped.status == 127)
    }

    @Test func decodesImageAndAlias() throws {
        let img = try Fixture.metadata("image", as: Image.self)
        let alias = try Fixture.metadata("image-alias", as: ImageAlias.self)
        #expect(alias.target == img.fingerprint)
        #expect(img.fingerprint.count == 64)
        #expect(img.aliases.contains { $0.name == alias.name })
    }

    @Test func decodesProfile() throws {
        let p = try Fixture.metadata("profile", as: Profile.self)
        #expect(p.name == "iotgw-vendor")
        #expect(p.config["security.idmap.isolated"] == "true")
    }
}

@Suite struct LXDLocalRulesTests {
    @Test(arguments: ["a", "vendor-acme", "A1-b2", String(repeating: "x", count: 63)])
    func acceptsValidInstanceNames(_ name: String) throws {
        try LXDName.validateInstance(name)
    }

    @Test(arguments: ["", "1abc", "-abc", "abc-", "a_b", "a.b", "a/b", "ä", String(repeating: "x", count: 64)])
    func rejectsInvalidInstanceNames(_ name: String) {
        #expect { try LXDName.validateInstance(name) } throws: { ($0 as? LXDError)?.code == .invalidName }
    }

    @Test func modeHeaderIsLeadingZeroOctal() {
        #expect(FileAttributes(mode: 0o644).modeHeader == "0644")
        #expect(FileAttributes(mode: 0o600).modeHeader == "0600")
        #expect(FileAttributes(mode: 0o4755).modeHeader == "4755")
        #expect(FileAttributes(mode: 0o7).modeHeader == "0007")
    }

    @Test func queryValuesAreEscaped() throws {
        let c = try LXDClient(socketPath: "/nonexistent.socket", logger: .init(label: "t"))
        #expect(c.uri("/1.0/instances", [("filter", "config.user.a eq b")]) == "/1.0/instances?filter=config.user.a%20eq%20b")
        #expect(c.uri("/1.0/instances/x/files", [("path", "/etc/a b&c")]) == "/1.0/instances/x/files?path=/etc/a%20b%26c")
    }

    @Test func socketDiscoveryOrder() throws {
        #expect(try LXDSocket.discover(environment: ["LXD_SOCKET": "/x.sock", "LXD_DIR": "/d"]) == "/x.sock")
        #expect(try LXDSocket.discover(environment: ["LXD_DIR": "/d"]) == "/d/unix.socket")
        #expect(LXDSocket.candidates(environment: [:]) == ["/var/snap/lxd/common/lxd/unix.socket", "/var/lib/lxd/unix.socket"])
    }

    @Test func parsesProfileYAMLAndStringifiesScalars() throws {
        let p = try LXDClient.parseProfileYAML("""
            description: test
            config:
              limits.processes: 500
              security.nesting: false
            devices:
              eth0: {type: nic, network: br0, name: eth0}
            """)
        #expect(p.config == ["limits.processes": "500", "security.nesting": "false"])
        #expect(p.devices["eth0"] == .nic(network: "br0"))
        #expect { try LXDClient.parseProfileYAML("nonsense: 1") } throws: { ($0 as? LXDError)?.code == .invalidArgument }
        #expect { try LXDClient.parseProfileYAML("- a list") } throws: { ($0 as? LXDError)?.code == .invalidArgument }
    }

    @Test func profilesInRepoParse() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../profiles").standardized
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }
        #expect(!files.isEmpty)
        for f in files {
            let p = try LXDClient.parseProfileYAML(try String(contentsOf: dir.appendingPathComponent(f), encoding: .utf8))
            #expect(p.config["security.privileged"] != "true", "\(f) must not make containers privileged")
        }
    }
}
