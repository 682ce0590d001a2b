import Crypto
import Foundation
import GatewayProtocol
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
@testable import VendorService

@Suite("HTTP API")
struct HTTPTests {
    /// Sends a signed announcement for `serial` from `gateway` (default: the enrolled one).
    static func announce(_ client: some TestClientProtocol, _ h: Harness, serial: String, vendorID: String = "0403",
                         productID: String = "6001", from gateway: GatewayIdentity? = nil, currentPlanVersion: Int = 0,
                         signedAt: Date = Harness.now) async throws -> TestResponse {
        let gateway = gateway ?? h.gateway
        let body = try Harness.announcement(gateway, serial: serial, vendorID: vendorID, productID: productID,
                                            currentPlanVersion: currentPlanVersion)
        return try await client.execute(uri: "/v1/announce", method: .post,
                                        headers: try signedHeaders(gateway, path: "/v1/announce", body: body, now: signedAt,
                                                                   vendor: h.configuration.vendor),
                                        body: ByteBuffer(bytes: body))
    }

    @Test func healthNamesTheVendor() async throws {
        try await Harness.with { h in
            // Through the public entry point: loads the signing key from the configured file.
            let app = try buildApplication(configuration: h.configuration, store: h.store, logger: Logger(label: "test"))
            try await app.test(.router) { client in
                let response = try await client.execute(uri: "/v1/health", method: .get)
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/json")
                let health = try JSONDecoder().decode(HealthStatus.self, from: Data(response.body.readableBytesView))
                #expect(health == HealthStatus(vendor: "acme", status: "ok"))
            }
        }
    }

    @Test func genuineDeviceGetsASignedPlanThatVerifies() async throws {
        try await Harness.with { h in
            try await h.register("FT1234")
            try await h.app().test(.router) { client in
                let response = try await Self.announce(client, h, serial: "FT1234")
                #expect(response.status == .ok)
                let (plan, _) = try h.validator().validate(rawBody: Data(response.body.readableBytesView), lastVersion: 0, now: Harness.now)
                #expect(plan.version == 1)
                #expect(plan.gatewayID == h.gateway.id)
                #expect(plan.container.name == "iotgw-acme")
                #expect(plan.container.limits == h.configuration.container.limits)
                #expect(plan.devices == [DeviceGrant(serial: "FT1234", vendorID: "0403", productID: "6001", kind: .unixChar,
                                                     path: "/dev/ttyUSB0")])
                #expect(plan.apps.map(\.name) == ["thermo-agent"])
            }
            let stored = try #require(try await h.store.plan(gatewayID: h.gateway.id))
            #expect(stored.version == 1)
            #expect(try await h.store.gateways().first?.devices == ["FT1234"])
        }
    }

    @Test func secondDeviceGivesVersionTwoWithBothDevices() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.register("CP2", model: "hygro-v2")
            try await h.app().test(.router) { client in
                let first = try await Self.announce(client, h, serial: "FT1")
                let v1 = try h.validator().validate(rawBody: Data(first.body.readableBytesView), lastVersion: 0, now: Harness.now).plan
                #expect(v1.version == 1)

                // Announcing the same device again answers the very same signed plan.
                let again = try await Self.announce(client, h, serial: "FT1", currentPlanVersion: 1)
                #expect(again.body == first.body)
                let held = PlanHeld(version: 1, payloadSHA256: Keys.sha256Hex(try h.validator().validate(
                    rawBody: Data(first.body.readableBytesView), lastVersion: 0, now: Harness.now).payload))
                let same = try h.validator().validate(rawBody: Data(again.body.readableBytesView), held: held, now: Harness.now).plan
                #expect(same.version == 1)

                let second = try await Self.announce(client, h, serial: "CP2", vendorID: "10c4", productID: "ea60", currentPlanVersion: 1)
                #expect(second.status == .ok)
                let v2 = try h.validator().validate(rawBody: Data(second.body.readableBytesView), lastVersion: 1, now: Harness.now).plan
                #expect(v2.version == 2)
                #expect(v2.devices.map(\.serial) == ["CP2", "FT1"])
                #expect(v2.apps.map(\.name) == ["hygro-agent", "thermo-agent"])
            }
        }
    }

    @Test func unknownSerialIsNotGenuine() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                let response = try await Self.announce(client, h, serial: "FAKE")
                #expect(response.status == .forbidden)
                #expect(errorCode(response) == "notGenuine")
            }
            #expect(try await h.store.plan(gatewayID: h.gateway.id) == nil)
            #expect(try await h.store.gateways().first?.devices == [])
        }
    }

    @Test(arguments: [("0403", "6015"), ("10c4", "6001")])
    func mismatchedUSBIDsAreNotGenuine(vendorID: String, productID: String) async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                let response = try await Self.announce(client, h, serial: "FT1", vendorID: vendorID, productID: productID)
                #expect(response.status == .forbidden)
                #expect(errorCode(response) == "notGenuine")
            }
        }
    }

    @Test func unenrolledGatewayIsRefused() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let stranger = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            try await h.app().test(.router) { client in
                let response = try await Self.announce(client, h, serial: "FT1", from: stranger)
                #expect(response.status == .forbidden)
                #expect(errorCode(response) == "unknownGateway")
            }
        }
    }

    @Test func tamperedSignatureIsRefused() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                let body = try Harness.announcement(h.gateway, serial: "FT1")
                var headers = try signedHeaders(h.gateway, path: "/v1/announce", body: body)
                let name = try #require(HTTPField.Name(RequestSignature.signatureHeader))
                var signature = Data(base64Encoded: try #require(headers[name])) ?? Data()
                signature[0] ^= 0x01
                headers[name] = signature.base64EncodedString()
                let response = try await client.execute(uri: "/v1/announce", method: .post, headers: headers, body: ByteBuffer(bytes: body))
                #expect(response.status == .unauthorized)
                #expect(errorCode(response) == "badSignature")
            }
        }
    }

    @Test func bodyChangedAfterSigningIsRefused() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.register("FT2")
            try await h.app().test(.router) { client in
                let headers = try signedHeaders(h.gateway, path: "/v1/announce", body: try Harness.announcement(h.gateway, serial: "FT1"))
                let other = try Harness.announcement(h.gateway, serial: "FT2")
                let response = try await client.execute(uri: "/v1/announce", method: .post, headers: headers, body: ByteBuffer(bytes: other))
                #expect(response.status == .unauthorized)
                #expect(errorCode(response) == "badSignature")
            }
        }
    }

    @Test func missingSignatureHeadersAreRefused() async throws {
        try await Harness.with { h in
            try await h.app().test(.router) { client in
                let body = try Harness.announcement(h.gateway, serial: "FT1")
                let response = try await client.execute(uri: "/v1/announce", method: .post, headers: [.contentType: "application/json"],
                                                        body: ByteBuffer(bytes: body))
                #expect(response.status == .unauthorized)
                #expect(errorCode(response) == "badSignature")
            }
        }
    }

    @Test func staleTimestampIsRefused() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                let response = try await Self.announce(client, h, serial: "FT1", signedAt: Harness.now.addingTimeInterval(-301))
                #expect(response.status == .unauthorized)
                #expect(errorCode(response) == "badSignature")
            }
        }
    }

    @Test func oversizedBodyIsRefused() async throws {
        try await Harness.with { h in
            try await h.app().test(.router) { client in
                let body = Data(repeating: UInt8(ascii: " "), count: 16 * 1024 + 1)
                let response = try await client.execute(uri: "/v1/announce", method: .post,
                                                        headers: try signedHeaders(h.gateway, path: "/v1/announce", body: body),
                                                        body: ByteBuffer(bytes: body))
                #expect(response.status == .contentTooLarge)
                #expect(errorCode(response) == "tooLarge")
            }
        }
    }

    @Test func malformedJSONIsRefused() async throws {
        try await Harness.with { h in
            try await h.app().test(.router) { client in
                for body in [Data("{not json".utf8), Data(#"{"gatewayID": "gw-x"}"#.utf8)] {
                    let response = try await client.execute(uri: "/v1/announce", method: .post,
                                                            headers: try signedHeaders(h.gateway, path: "/v1/announce", body: body),
                                                            body: ByteBuffer(bytes: body))
                    #expect(response.status == .badRequest)
                    #expect(errorCode(response) == "malformed")
                }
            }
        }
    }

    @Test func bodyForAnotherGatewayIsRefused() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let other = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            try await h.app().test(.router) { client in
                // Signed by the enrolled gateway, announcing for another.
                let body = try Harness.announcement(other, serial: "FT1")
                let response = try await client.execute(uri: "/v1/announce", method: .post,
                                                        headers: try signedHeaders(h.gateway, path: "/v1/announce", body: body),
                                                        body: ByteBuffer(bytes: body))
                #expect(response.status == .badRequest)
                #expect(errorCode(response) == "gatewayMismatch")
            }
        }
    }

    @Test func reportIsStored() async throws {
        try await Harness.with { h in
            let report = ProvisioningReport(gatewayID: h.gateway.id, vendor: "acme", planVersion: 1, outcome: .applied, container: "iotgw-acme",
                                            addresses: ["10.0.3.17"], attachedDevices: ["FT1"])
            let body = try WireJSON.encoder().encode(report)
            try await h.app().test(.router) { client in
                let response = try await client.execute(uri: "/v1/report", method: .post,
                                                        headers: try signedHeaders(h.gateway, path: "/v1/report", body: body),
                                                        body: ByteBuffer(bytes: body))
                #expect(response.status == .noContent)
            }
            let stored = try await h.store.reports()
            #expect(stored.count == 1)
            #expect(stored.first?.gatewayID == h.gateway.id)
            #expect(stored.first?.planVersion == 1)
            #expect(stored.first?.outcome == "applied")
            let decoded = try WireJSON.decoder().decode(ProvisioningReport.self, from: Data(try #require(stored.first).json.utf8))
            #expect(decoded == report)
        }
    }

    @Test func reportForAnotherVendorIsRefused() async throws {
        try await Harness.with { h in
            let body = try WireJSON.encoder().encode(ProvisioningReport(gatewayID: h.gateway.id, vendor: "globex", planVersion: 1,
                                                                        outcome: .failed, error: "boom"))
            try await h.app().test(.router) { client in
                let response = try await client.execute(uri: "/v1/report", method: .post,
                                                        headers: try signedHeaders(h.gateway, path: "/v1/report", body: body),
                                                        body: ByteBuffer(bytes: body))
                #expect(response.status == .badRequest)
                #expect(errorCode(response) == "wrongVendor")
            }
            #expect(try await h.store.reports().isEmpty)
        }
    }

    @Test func unsignedReportIsRefused() async throws {
        try await Harness.with { h in
            let body = try WireJSON.encoder().encode(ProvisioningReport(gatewayID: h.gateway.id, vendor: "acme", planVersion: 1, outcome: .denied))
            try await h.app().test(.router) { client in
                let response = try await client.execute(uri: "/v1/report", method: .post, body: ByteBuffer(bytes: body))
                #expect(response.status == .unauthorized)
            }
            #expect(try await h.store.reports().isEmpty)
        }
    }

    @Test func unknownRoutesAnswerErrorBody() async throws {
        try await Harness.with { h in
            try await h.app().test(.router) { client in
                let response = try await client.execute(uri: "/v1/nope", method: .get)
                #expect(response.status == .notFound)
                #expect(errorCode(response) == "notFound")
            }
        }
    }

    @Test func liveServerAnswersOverTCP() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.live) { client in
                #expect(try await client.execute(uri: "/v1/health", method: .get).status == .ok)
                let response = try await Self.announce(client, h, serial: "FT1")
                #expect(response.status == .ok)
                _ = try h.validator().validate(rawBody: Data(response.body.readableBytesView), lastVersion: 0, now: Harness.now)
            }
        }
    }
}
