import Chef
import Crypto
import Foundation
import GatewayProtocol
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Synchronization
import Testing
@testable import VendorService

/// `POST /v1/plan`, `POST /v1/bootstrap` without a Chef server, and publishing releases.
@Suite("Plan polling, bootstrap and releases")
struct PlanAndBootstrapTests {
    func plan(_ response: TestResponse, _ h: Harness, lastVersion: Int = 0) throws -> ProvisioningPlan {
        try h.validator().validate(rawBody: Data(response.body.readableBytesView), lastVersion: lastVersion, now: Harness.now).plan
    }

    @Test func planBeforeAnyAnnouncementIsNoPlan() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                let response = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 0))
                #expect(response.status == .conflict)
                #expect(errorCode(response) == "noPlan")
                // A device that is not genuine gives no plan either.
                #expect(try await HTTPTests.announce(client, h, serial: "FAKE").status == .forbidden)
                let again = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 0))
                #expect(errorCode(again) == "noPlan")
            }
        }
    }

    @Test func planAnswersTheCurrentPlanAndFollowsReleases() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                #expect(try await HTTPTests.announce(client, h, serial: "FT1").status == .ok)

                // Unchanged: the very same signed plan.
                let same = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 1))
                #expect(same.status == .ok)
                #expect(try decode(SignedPlan.self, same) == (try #require(try await h.store.plan(gatewayID: h.gateway.id))).signedPlan())
                let v1 = try plan(same, h, lastVersion: 1)
                #expect(v1.version == 1)
                #expect(v1.apps == [h.configuration.app(named: "thermo-agent")])

                // A release changes the content: the next version, with the new app version and run list.
                try await h.store.addAppRelease(AppRelease(app: "thermo-agent", version: "1.1.0", runList: ["recipe[thermo_agent@1.1.0]"],
                                                           publishedAt: Harness.now))
                let updated = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 1))
                let v2 = try plan(updated, h, lastVersion: 1)
                #expect(v2.version == 2)
                #expect(v2.apps == [AppSpec(name: "thermo-agent", version: "1.1.0", runList: ["recipe[thermo_agent@1.1.0]"],
                                            inspecProfile: "thermo-agent")])
                #expect(v2.devices == v1.devices)
                #expect(try await h.store.plan(gatewayID: h.gateway.id)?.version == 2)

                // Announcements compose with the release too (no second bump).
                let announced = try await HTTPTests.announce(client, h, serial: "FT1", currentPlanVersion: 2)
                #expect(try plan(announced, h, lastVersion: 2).version == 2)

                // A gateway holding a higher version (restored vendor database) gets one above it.
                let ahead = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 7))
                #expect(try plan(ahead, h, lastVersion: 7).version == 8)
            }
        }
    }

    /// `iot-daemon withdraw`: the next plan, signed like any other, grants nothing (a decommission for the
    /// gateway); undone, the devices and apps come back, each time as a new version.
    @Test func withdrawingSignsAnEmptyPlanAndUndoingGivesEverythingBack() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                #expect(try await HTTPTests.announce(client, h, serial: "FT1").status == .ok)
                let service = h.service()
                let out = try await service.setWithdrawn(gatewayID: h.gateway.id, true, logger: Harness.logger)
                #expect(out == Withdrawal(gatewayID: h.gateway.id, withdrawn: true, previousVersion: 1, version: 2))
                let polled = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 1))
                let empty = try plan(polled, h, lastVersion: 1)
                #expect(empty.version == 2 && empty.isDecommission, "\(empty.devices) \(empty.apps)")
                // A gateway announcing its device again still gets nothing.
                let announced = try await HTTPTests.announce(client, h, serial: "FT1", currentPlanVersion: 2)
                #expect(try plan(announced, h, lastVersion: 2).isDecommission)

                let back = try await service.setWithdrawn(gatewayID: h.gateway.id, false, logger: Harness.logger)
                #expect(back.version == 3)
                let again = try plan(try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 2)), h,
                                     lastVersion: 2)
                #expect(again.version == 3 && again.devices.map(\.serial) == ["FT1"] && !again.apps.isEmpty)
                await #expect(throws: StoreError.self) {
                    try await service.setWithdrawn(gatewayID: "gw-0000000000000000", true, logger: Harness.logger)
                }
            }
        }
    }

    @Test func planIsSignedLikeAnnouncements() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let other = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            try await h.app().test(.router) { client in
                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                let mismatch = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: other.id, currentPlanVersion: 0))
                #expect(mismatch.status == .badRequest)
                #expect(errorCode(mismatch) == "gatewayMismatch")
                let stranger = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: other.id, currentPlanVersion: 0), from: other)
                #expect(errorCode(stranger) == "unknownGateway")
                let unsigned = try await client.execute(uri: "/v1/plan", method: .post,
                                                        body: ByteBuffer(bytes: try WireJSON.encoder().encode(PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 0))))
                #expect(errorCode(unsigned) == "badSignature")
                let negative = try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: -1))
                #expect(errorCode(negative) == "invalidField")
                let body = Data(repeating: UInt8(ascii: " "), count: 16 * 1024 + 1)
                let large = try await client.execute(uri: "/v1/bootstrap", method: .post,
                                                     headers: try signedHeaders(h.gateway, path: "/v1/bootstrap", body: body), body: ByteBuffer(bytes: body))
                #expect(errorCode(large) == "tooLarge")
                let garbage = Data("{}".utf8)
                let malformed = try await client.execute(uri: "/v1/bootstrap", method: .post,
                                                         headers: try signedHeaders(h.gateway, path: "/v1/bootstrap", body: garbage),
                                                         body: ByteBuffer(bytes: garbage))
                #expect(errorCode(malformed) == "malformed")
            }
        }
    }

    @Test func bootstrapWithoutChefAnswersKindNoneWithThePlansRunList() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.register("CP2", model: "hygro-v2")
            try await h.app().test(.router) { client in
                let early = try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id, planVersion: 0))
                #expect(early.status == .conflict)
                #expect(errorCode(early) == "noPlan")

                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                _ = try await HTTPTests.announce(client, h, serial: "CP2", vendorID: "10c4", productID: "ea60", currentPlanVersion: 1)
                let response = try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id, planVersion: 2))
                #expect(response.status == .ok)
                #expect(response.headers[.cacheControl] == "no-store")
                // Apps sorted by name: hygro-agent, then thermo-agent.
                let verified = try h.verifiedBootstrap(response, planVersion: 2)
                #expect(verified.bundle == BootstrapBundle(kind: .none, gatewayID: h.gateway.id, vendor: "acme", planVersion: 2,
                                                           expiresAt: Harness.now.addingTimeInterval(BootstrapBundle.lifetime),
                                                           runList: ["recipe[hygro_agent]", "recipe[thermo_agent]"]))
                #expect(verified.playbookArchive == nil)
            }
        }
    }

    @Test func bootstrapForAnotherPlanVersionIsAConflictNamingTheCurrentOne() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.register("CP2", model: "hygro-v2")
            try await h.app().test(.router) { client in
                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                _ = try await HTTPTests.announce(client, h, serial: "CP2", vendorID: "10c4", productID: "ea60", currentPlanVersion: 1)
                for version in [0, 1, 3] {
                    let response = try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id, planVersion: version))
                    #expect(response.status == .conflict)
                    #expect(errorCode(response) == "planVersionMismatch")
                    #expect(try decode(ErrorBody.self, response).error.message.contains("current plan is version 2"))
                }
                #expect(try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id, planVersion: 2)).status == .ok)
            }
        }
    }

    @Test func theSignedBootstrapIsBoundToItsGatewayVersionAndLifetime() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.app().test(.router) { client in
                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                let response = try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id, planVersion: 1))
                #expect(try h.verifiedBootstrap(response, planVersion: 1).bundle.planVersion == 1)

                func refusal(_ validate: () throws -> VerifiedBootstrap) -> ProtocolError.Code? {
                    do { _ = try validate() } catch let error as ProtocolError { return error.code } catch { return nil }
                    return nil
                }
                let body = Data(response.body.readableBytesView)
                let key = h.signer.publicKey
                let node = ChefProvisioner.nodeName(gatewayID: h.gateway.id, vendor: "acme")
                let other = GatewayIdentity(key: .init())
                #expect(refusal { try BundleValidator(vendor: "acme", vendorKey: key, gatewayID: other.id)
                    .validate(rawBody: body, planVersion: 1, expectedNode: node, now: Harness.now) } == .wrongGateway)
                #expect(refusal { try BundleValidator(vendor: "globex", vendorKey: key, gatewayID: h.gateway.id)
                    .validate(rawBody: body, planVersion: 1, expectedNode: node, now: Harness.now) } == .wrongVendor)
                #expect(refusal { try h.verifiedBootstrap(response, planVersion: 2) } == .wrongAudience)
                #expect(refusal { try h.verifiedBootstrap(response, planVersion: 1,
                                                          now: Harness.now.addingTimeInterval(BootstrapBundle.lifetime)) } == .expired)
                #expect(refusal { try BundleValidator(vendor: "acme", vendorKey: Curve25519.Signing.PrivateKey().publicKey, gatewayID: h.gateway.id)
                    .validate(rawBody: body, planVersion: 1, expectedNode: node, now: Harness.now) } == .unknownKey)
            }
        }
    }

    @Test func theAnsibleBundleCarriesItsArchiveBoundByDigest() async throws {
        try await Harness.with(configure: { $0.ansible = .init(playbookDirectory: repositoryRoot.appendingPathComponent("cookbooks/ansible/sensor-agent").path) }) { h in
            try await h.register("FT1")
            let provisioner = try #require(AnsiblePlaybookProvisioner.configured(by: h.configuration))
            try await h.app(provisioner: provisioner).test(.router) { client in
                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                let response = try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id, planVersion: 1))
                #expect(response.status == .ok)
                let verified = try h.verifiedBootstrap(response, planVersion: 1)
                #expect(verified.bundle.kind == .ansible)
                #expect(verified.bundle.extraVars == ["app_version": "1.0.0", "thermo_agent_version": "1.0.0"])
                let archive = try #require(verified.playbookArchive)
                #expect(archive.prefix(2) == Data([0x1f, 0x8b]), "gzip")
                #expect(verified.bundle.playbookArchiveSHA256 == Keys.sha256Hex(archive))

                // The archive is not signed itself, its digest is: another archive beside the same bytes is refused.
                var signed = try decode(SignedBootstrap.self, response)
                var tampered = archive
                tampered[tampered.count / 2] ^= 0x01
                signed.playbookArchive = tampered.base64EncodedString()
                let validator = BundleValidator(vendor: "acme", vendorKey: h.signer.publicKey, gatewayID: h.gateway.id)
                #expect { try validator.validate(rawBody: try WireJSON.encoder().encode(signed), planVersion: 1, expectedNode: "-", now: Harness.now) }
                    throws: { ($0 as? ProtocolError)?.code == .digestMismatch }
                signed.playbookArchive = nil
                #expect { try validator.validate(rawBody: try WireJSON.encoder().encode(signed), planVersion: 1, expectedNode: "-", now: Harness.now) }
                    throws: { ($0 as? ProtocolError)?.code == .digestMismatch }
            }
        }
    }

    @Test func anUnchangedPlanIsAnsweredByteForByteWhileFreshAndRenewedNearItsExpiry() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let ttl = TimeInterval(h.configuration.planTTLSeconds)
            let poll = PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 1)
            let first = try await h.app().test(.router) { client in
                Data(try await HTTPTests.announce(client, h, serial: "FT1").body.readableBytesView)
            }
            let payload = try h.validator().validate(rawBody: first, lastVersion: 0, now: Harness.now).payload
            let held = PlanHeld(version: 1, payloadSHA256: Keys.sha256Hex(payload))
            // Just over half the lifetime left: the same bytes, which the gateway accepts again.
            let fresh = Harness.now.addingTimeInterval(ttl / 2 - 1)
            try await h.app(now: fresh).test(.router) { client in
                let polled = try await signedPost(client, h, "/v1/plan", poll, now: fresh)
                #expect(Data(polled.body.readableBytesView) == first)
                #expect(try h.validator().validate(rawBody: Data(polled.body.readableBytesView), held: held, now: fresh).plan.version == 1)
                let announced = try await HTTPTests.announce(client, h, serial: "FT1", currentPlanVersion: 1, signedAt: fresh)
                #expect(Data(announced.body.readableBytesView) == first)
            }
            #expect(try await h.store.plan(gatewayID: h.gateway.id)?.issuedAt == Harness.now)
            // Half the lifetime gone: the next version, with a fresh expiry and the same content.
            let late = Harness.now.addingTimeInterval(ttl / 2)
            try await h.app(now: late).test(.router) { client in
                let polled = try await signedPost(client, h, "/v1/plan", poll, now: late)
                let renewed = try h.validator().validate(rawBody: Data(polled.body.readableBytesView), held: held, now: late).plan
                #expect(renewed.version == 2)
                #expect(renewed.issuedAt == late)
                #expect(renewed.expiresAt == late.addingTimeInterval(ttl))
                #expect(renewed.grant == (try h.validator().validate(rawBody: first, lastVersion: 0, now: Harness.now).plan.grant))
            }
        }
    }

    /// One service (so its memory of unchanged plans carries from poll to poll) whose clock moves: polls that
    /// read the inputs an earlier poll found unchanged are answered without composing, but never once the
    /// plan nears its expiry, is below the gateway's version, or its inputs changed behind the service's back.
    @Test func pollsAnsweredFromMemoryStillFollowTheClockTheGatewayAndTheStore() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let ttl = TimeInterval(h.configuration.planTTLSeconds)
            let clock = Mutex(Harness.now)
            let service = ProvisioningService(configuration: h.configuration, store: h.store, signer: h.signer, now: { clock.withLock { $0 } })
            let gateway = try #require(try await h.store.gateway(id: h.gateway.id))
            let announcement = try WireJSON.decoder().decode(Announcement.self, from: try Harness.announcement(h.gateway, serial: "FT1"))
            let first = try await service.announce(announcement, from: gateway, logger: Harness.logger)
            func poll(holding version: Int) async throws -> ProvisioningPlan {
                let signed = try await service.currentPlan(PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: version), from: gateway,
                                                           logger: Harness.logger)
                return try h.validator().validate(signed, held: PlanHeld(version: version, payloadSHA256: nil), now: clock.withLock { $0 }).plan
            }
            // Composed once, then answered from memory: the very same signed plan.
            #expect(try await service.currentPlan(PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 1), from: gateway,
                                                  logger: Harness.logger) == first)
            #expect(service.unchangedPlans.count == 1)
            #expect(try await service.currentPlan(PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: 1), from: gateway,
                                                  logger: Harness.logger) == first)
            // The gateway holds a higher version (a restored vendor database): one above it, remembered or not.
            #expect(try await poll(holding: 5).version == 6)
            #expect(try await poll(holding: 6).version == 6)
            // Half the lifetime gone: renewed, even though the inputs are the remembered ones.
            clock.withLock { $0 = Harness.now.addingTimeInterval(ttl / 2) }
            let renewed = try await poll(holding: 6)
            #expect(renewed.version == 7)
            #expect(renewed.expiresAt == Harness.now.addingTimeInterval(ttl / 2 + ttl))
            #expect(try await poll(holding: 7).version == 7)
            // A release recorded by someone else (another replica, the CLI): the next poll composes it in.
            try await h.store.addAppRelease(AppRelease(app: "thermo-agent", version: "1.2.0", runList: ["recipe[thermo_agent@1.2.0]"],
                                                       publishedAt: Harness.now))
            let released = try await poll(holding: 7)
            #expect(released.version == 8)
            #expect(released.apps.map(\.version) == ["1.2.0"])
            #expect(try await poll(holding: 8) == released)
        }
    }

    /// One replica keeps the gateway's row and its unchanged plan in memory, and answers a poll from them
    /// only while the generation its nonce claim reads says nothing changed: a release, a withdrawal or a
    /// revocation written by someone else (another replica, the CLI) is seen by the very next request.
    @Test func aReplicaAnswersFromMemoryOnlyWhileTheStoreSaysNothingChanged() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            let service = h.service()
            let app = buildApplication(configuration: h.configuration, service: service, logger: Harness.logger)
            try await app.test(.router) { client in
                let first = Data(try await HTTPTests.announce(client, h, serial: "FT1").body.readableBytesView)
                func poll(holding version: Int) async throws -> TestResponse {
                    try await signedPost(client, h, "/v1/plan", PlanRequest(gatewayID: h.gateway.id, currentPlanVersion: version))
                }
                #expect(Data(try await poll(holding: 1).body.readableBytesView) == first)
                #expect(service.knownGateways.value(for: h.gateway.id)?.gateway.id == h.gateway.id)
                let generation = try #require(try await h.store.planInputs(gatewayID: h.gateway.id).generation)
                #expect(service.unchangedPlans.entry(for: generation, gatewayID: h.gateway.id) != nil,
                        "the next poll at this generation is answered from memory")
                #expect(Data(try await poll(holding: 1).body.readableBytesView) == first)
                // A device registered for nobody here raises the catalog's count but changes nothing of this
                // gateway's inputs: the same plan, remembered under the new count.
                try await h.register("FT9")
                #expect(Data(try await poll(holding: 1).body.readableBytesView) == first)
                let raised = try #require(try await h.store.planInputs(gatewayID: h.gateway.id).generation)
                #expect(raised.catalog > generation.catalog && service.unchangedPlans.entry(for: raised, gatewayID: h.gateway.id) != nil)

                try await h.store.addAppRelease(AppRelease(app: "thermo-agent", version: "1.2.0", runList: ["recipe[thermo_agent@1.2.0]"],
                                                           publishedAt: Harness.now))
                let released = try plan(try await poll(holding: 1), h, lastVersion: 1)
                #expect(released.version == 2 && released.apps.map(\.version) == ["1.2.0"])

                try await h.store.setWithdrawn(gatewayID: h.gateway.id, at: Harness.now)
                let withdrawn = try plan(try await poll(holding: 2), h, lastVersion: 2)
                #expect(withdrawn.version == 3 && withdrawn.devices.isEmpty && withdrawn.apps.isEmpty)

                try await h.store.revokeGateway(id: h.gateway.id, at: Harness.now)
                let refused = try await poll(holding: 3)
                #expect(refused.status == .forbidden && errorCode(refused) == "unknownGateway")
                #expect(service.knownGateways.value(for: h.gateway.id) == nil)
            }
        }
    }

    @Test func bootstrapWhileTheChefServerIsDownIsChefUnavailable() async throws {
        try await withTemporaryFolder { folder in
            let keyPath = folder.appendingPathComponent("admin.pem").path
            try ChefPrivateKey.generate().pemRepresentation.write(toFile: keyPath, atomically: true, encoding: .utf8)
            // Port 1 on loopback: nothing listens, the connection is refused.
            try await Harness.with(configure: {
                $0.chef = .init(serverURL: "http://127.0.0.1:1", adminName: "admin", adminKey: keyPath)
            }) { h in
                try await h.register("FT1")
                let provisioner = try #require(try ChefProvisioner.configured(by: h.configuration, store: h.store, logger: Harness.logger))
                try await h.app(provisioner: provisioner).test(.router) { client in
                    // Announcing does not need the Chef server.
                    #expect(try await HTTPTests.announce(client, h, serial: "FT1").status == .ok)
                    let response = try await signedPost(client, h, "/v1/bootstrap", BootstrapRequest(gatewayID: h.gateway.id, planVersion: 1))
                    #expect(response.status == .serviceUnavailable)
                    #expect(errorCode(response) == "chefUnavailable")
                }
                #expect(try await h.store.chefRegistration(gatewayID: h.gateway.id) == nil)
            }
        }
    }

    @Test func publishingBumpsThePlansThatCarryTheAppOnly() async throws {
        try await Harness.with { h in
            try await h.register("FT1")
            try await h.register("CP2", model: "hygro-v2")
            let second = GatewayIdentity(key: Curve25519.Signing.PrivateKey())
            try await h.store.enrollGateway(EnrolledGateway(id: second.id, publicKey: second.publicKey, enrolledAt: Harness.now))
            try await h.app().test(.router) { client in
                _ = try await HTTPTests.announce(client, h, serial: "FT1")
                _ = try await HTTPTests.announce(client, h, serial: "CP2", vendorID: "10c4", productID: "ea60", from: second)
            }
            let service = h.service()
            let publication = try await service.publish(app: "hygro-agent", version: "2.2.0", runList: ["recipe[hygro_agent@2.2.0]"],
                                                        logger: Harness.logger)
            #expect(publication.previous == h.configuration.app(named: "hygro-agent"))
            #expect(publication.release.runList == ["recipe[hygro_agent@2.2.0]"])
            #expect(publication.gateways == [PlanRefresh(gatewayID: second.id, previousVersion: 1, version: 2,
                                                         runList: ["recipe[hygro_agent@2.2.0]", "recipe[thermo_agent]"], node: nil,
                                                         nodeUpdated: false, error: nil)])
            #expect(try await h.store.plan(gatewayID: h.gateway.id)?.version == 1)
            #expect(try await h.store.plan(gatewayID: second.id)?.decodedPlan().apps.map(\.version) == ["2.2.0", "1.0.0"])

            // Without --run-list the current run list stays; publishing the same release again changes no plan.
            let again = try await service.publish(app: "hygro-agent", version: "2.2.0", runList: nil, logger: Harness.logger)
            #expect(again.release.runList == ["recipe[hygro_agent@2.2.0]"])
            #expect(again.gateways.map(\.version) == [2])
            #expect(again.gateways.map(\.previousVersion) == [2])
        }
    }

    @Test func publishingRefusesUnknownAppsAndBadInputWithoutRecordingAnything() async throws {
        try await Harness.with { h in
            struct Case { var app: String, version: String, runList: [String]?, field: String }
            let service = h.service()
            let cases = [Case(app: "nope", version: "1.0", runList: nil, field: "app"),
                         Case(app: "thermo-agent", version: "1 0", runList: nil, field: "version"),
                         Case(app: "thermo-agent", version: "1.1", runList: ["recipe[x"], field: "runList"),
                         Case(app: "thermo-agent", version: "1.1", runList: [], field: "runList")]
            for c in cases {
                let error = await #expect(throws: ConfigurationError.self) {
                    _ = try await service.publish(app: c.app, version: c.version, runList: c.runList, logger: Harness.logger)
                }
                #expect(error?.field == c.field)
            }
            let releases = try await h.store.appReleases()
            #expect(releases.isEmpty)
        }
    }

    @Test func reportsKeepTheDelivery() async throws {
        try await Harness.with { h in
            let delivery = DeliverySummary(result: "rolled-back", provisioner: "chef", convergeSummary: "3/5 resources updated",
                                           controls: ["thermo-1": "passed", "thermo-2": "failed"], failingControls: ["thermo-2"],
                                           restoredSnapshot: "iotgw-pre-v2", message: "validation failed")
            let report = ProvisioningReport(gatewayID: h.gateway.id, vendor: "acme", planVersion: 2, outcome: .rolledBack, container: "iotgw-acme",
                                            attachedDevices: ["FT1"], delivery: delivery)
            try await h.app().test(.router) { client in
                let response = try await signedPost(client, h, "/v1/report", report)
                #expect(response.status == .noContent)
            }
            let stored = try #require(try await h.store.reports().first)
            #expect(stored.outcome == "rolled-back")
            #expect(try WireJSON.decoder().decode(ProvisioningReport.self, from: Data(stored.json.utf8)).delivery == delivery)
        }
    }
}
