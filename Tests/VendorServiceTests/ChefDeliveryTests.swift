import Chef
import Foundation
import GatewayProtocol
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
@testable import VendorService

/// Bootstrap and app updates against the real goiardi (`scripts/start-goiardi`), asserting on the
/// Chef server's state as its admin sees it.
@Suite("Chef delivery on goiardi")
struct ChefDeliveryTests {
    static func bootstrap(_ client: some TestClientProtocol, _ h: Harness, planVersion: Int = 1) async throws -> BootstrapBundle {
        let response = try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id, planVersion: planVersion))
        try #require(response.status == .ok, "bootstrap answered \(response.status): \(String(buffer: response.body))")
        #expect(response.headers[.cacheControl] == "no-store")
        // As the gateway takes it: signed, for this gateway, vendor, version and node.
        return try h.verifiedBootstrap(response, planVersion: planVersion).bundle
    }

    @Test func firstBootstrapRegistersLikeKnifeAndTheSecondReusesTheKey() async throws {
        try await Goiardi.with { h, provisioner, admin in
            try await h.register("FT1")
            let name = "\(h.gateway.id)-\(h.configuration.vendor)"
            try await h.app(provisioner: provisioner).test(.router) { client in
                #expect(try await HTTPTests.announce(client, h, serial: "FT1").status == .ok)
                #expect(try await admin.nodeExists(named: name) == false)

                let bundle = try await Self.bootstrap(client, h)
                #expect(bundle.kind == .chef)
                #expect(bundle.nodeName == name)
                #expect(bundle.chefServerURL == Goiardi.url)
                #expect(bundle.runList == ["recipe[thermo_agent]"])
                #expect(bundle.environment == nil)
                #expect(bundle.trustedCerts == [])
                let key = try #require(bundle.clientKeyPEM)
                #expect(key.hasPrefix("-----BEGIN RSA PRIVATE KEY-----"))

                // On the server: a plain client, and its node with the plan's run list.
                let chefClient = try await admin.client(named: name)
                #expect(!chefClient.admin && !chefClient.validator)
                let node = try await admin.node(named: name)
                #expect(node.runList == ["recipe[thermo_agent]"])
                #expect(node.chefEnvironment == "_default")
                #expect(node.normal["iotgw"]?["gateway"] == .string(h.gateway.id))

                // The key authenticates as the node's client, which can read (and, owning it, update) its node.
                let asNode = admin.signing(as: try ChefCredentials(name: name, pemRepresentation: key))
                #expect(try await asNode.node(named: name).runList == ["recipe[thermo_agent]"])
                let stored = try #require(try await h.store.chefRegistration(gatewayID: h.gateway.id))
                #expect(stored == ChefRegistration(gatewayID: h.gateway.id, nodeName: name, clientKeyPEM: key, registeredAt: Harness.now))

                // Second call: the same key, no new registration (which would have replaced the key on the server).
                let again = try await Self.bootstrap(client, h)
                #expect(again == bundle)
                #expect(try await h.store.chefRegistration(gatewayID: h.gateway.id) == stored)
                #expect(try await asNode.node(named: name).name == name)
            }
        }
    }

    @Test func theNodeFollowsThePlansRunList() async throws {
        try await Goiardi.with { h, provisioner, admin in
            try await h.register("FT1")
            try await h.register("CP2", model: "hygro-v2")
            let name = "\(h.gateway.id)-\(h.configuration.vendor)"
            try await h.app(provisioner: provisioner).test(.router) { client in
                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                _ = try await Self.bootstrap(client, h)

                // A new device brings a new app: the new plan version updates the registered node at once.
                let response = try await HTTPTests.announce(client, h, serial: "CP2", vendorID: "10c4", productID: "ea60", currentPlanVersion: 1)
                #expect(response.status == .ok)
                #expect(try await admin.node(named: name).runList == ["recipe[hygro_agent]", "recipe[thermo_agent]"])

                // Changed behind the daemon's back: the next bootstrap puts the plan's run list back.
                try await admin.setRunList(["recipe[something_else]"], ofNode: name)
                let bundle = try await Self.bootstrap(client, h, planVersion: 2)
                #expect(bundle.runList == ["recipe[hygro_agent]", "recipe[thermo_agent]"])
                #expect(try await admin.node(named: name).runList == ["recipe[hygro_agent]", "recipe[thermo_agent]"])

                // Deleted on the server: saved again, owned by the same client.
                try await admin.deleteNode(named: name)
                let restored = try await Self.bootstrap(client, h, planVersion: 2)
                #expect(restored.clientKeyPEM == bundle.clientKeyPEM)
                #expect(try await admin.node(named: name).runList == ["recipe[hygro_agent]", "recipe[thermo_agent]"])
            }
        }
    }

    @Test func aClientDeletedOnTheServerIsRegisteredAgainWithANewKey() async throws {
        try await Goiardi.with { h, provisioner, admin in
            try await h.register("FT1")
            let name = "\(h.gateway.id)-\(h.configuration.vendor)"
            try await h.app(provisioner: provisioner).test(.router) { client in
                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                let first = try await Self.bootstrap(client, h)
                try await admin.deleteClient(named: name)

                let second = try await Self.bootstrap(client, h)
                let key = try #require(second.clientKeyPEM)
                #expect(key != first.clientKeyPEM)
                #expect(try await h.store.chefRegistration(gatewayID: h.gateway.id)?.clientKeyPEM == key)
                let asNode = admin.signing(as: try ChefCredentials(name: name, pemRepresentation: key))
                #expect(try await asNode.node(named: name).runList == ["recipe[thermo_agent]"])
            }
        }
    }

    @Test func publishingAnAppSetsTheRunListOfRegisteredNodes() async throws {
        try await Goiardi.with { h, provisioner, admin in
            try await h.register("FT1")
            let name = "\(h.gateway.id)-\(h.configuration.vendor)"
            try await h.app(provisioner: provisioner).test(.router) { client in
                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                let bundle = try await Self.bootstrap(client, h)

                let service = h.service(provisioner: provisioner)
                let publication = try await service.publish(app: "thermo-agent", version: "1.1.0", runList: ["recipe[thermo_agent@1.1.0]"],
                                                            logger: Harness.logger)
                #expect(publication.gateways == [PlanRefresh(gatewayID: h.gateway.id, previousVersion: 1, version: 2,
                                                             runList: ["recipe[thermo_agent@1.1.0]"], node: name, nodeUpdated: true, error: nil)])
                #expect(try await admin.node(named: name).runList == ["recipe[thermo_agent@1.1.0]"])

                // The gateway's next poll gets the new version; the bootstrap answers the new run list with the same key.
                let polled = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 1))
                let plan = try h.validator().validate(rawBody: Data(polled.body.readableBytesView), lastVersion: 1, now: Harness.now).plan
                #expect(plan.version == 2)
                #expect(plan.apps.map(\.version) == ["1.1.0"])
                let updated = try await Self.bootstrap(client, h, planVersion: 2)
                #expect(updated.runList == ["recipe[thermo_agent@1.1.0]"])
                #expect(updated.clientKeyPEM == bundle.clientKeyPEM)

                // Publishing the same release again: nothing to change.
                let again = try await service.publish(app: "thermo-agent", version: "1.1.0", runList: nil, logger: Harness.logger)
                #expect(again.gateways.map(\.nodeUpdated) == [false])
                #expect(again.gateways.map(\.version) == [2])
            }
        }
    }
}
