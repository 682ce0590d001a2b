import Crypto
import Foundation
import GatewayProtocol
import Testing
@testable import VendorService

@Suite("PlanComposer")
struct PlanComposerTests {
    let configuration = makeConfiguration(folder: URL(fileURLWithPath: "/nonexistent"))
    var composer: PlanComposer { PlanComposer(configuration: configuration) }
    let now = Date(timeIntervalSince1970: 1_750_000_000)

    func device(_ serial: String, model: String = "thermo-v1") -> RegisteredDevice {
        let m = configuration.model(named: model)
        return RegisteredDevice(serial: serial, vendorID: m?.vendorID ?? "ffff", productID: m?.productID ?? "ffff", model: model,
                                registeredAt: now)
    }

    func previous(_ c: PlanComposer.Composed) -> PlanComposer.Previous {
        .init(version: c.plan.version, contentHash: c.contentHash, plan: c.plan)
    }

    @Test func firstPlanIsVersionOneWithContainerImageAndLimitsFromConfig() throws {
        let c = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: nil, now: now)
        #expect(c.plan.version == 1)
        #expect(c.isNewVersion)
        #expect(c.plan.schema == ProvisioningPlan.currentSchema)
        #expect(c.plan.vendor == "acme")
        #expect(c.plan.gatewayID == "gw-1")
        #expect(c.plan.container.name == "iotgw-acme")
        #expect(c.plan.container.image == configuration.image)
        #expect(c.plan.container.limits == ResourceLimits(cpus: 1, memoryMiB: 256, diskMiB: 2048, processes: 300))
        #expect(c.plan.container.network == .nat)
        #expect(c.plan.issuedAt == now)
        #expect(c.plan.expiresAt == now.addingTimeInterval(86_400))
        #expect(c.plan.devices == [DeviceGrant(serial: "A1", vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB0")])
        #expect(c.plan.apps.map(\.name) == ["thermo-agent"])
    }

    @Test func sameDevicesKeepThePlanItselfWhileMoreThanHalfItsLifetimeIsLeft() throws {
        let first = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: nil, now: now)
        let later = now.addingTimeInterval(composer.planTTL / 2 - 1)
        let again = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: previous(first), gatewayVersion: 1, now: later)
        #expect(!again.isNewVersion)
        #expect(again.plan == first.plan)
        #expect(again.contentHash == first.contentHash)
        // The gateway not holding it yet changes nothing either.
        #expect(try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: previous(first), gatewayVersion: 0, now: later)
            .plan == first.plan)
    }

    @Test func sameDevicesGetTheNextVersionOnceHalfTheLifetimeIsGone() throws {
        let first = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: nil, now: now)
        let later = now.addingTimeInterval(composer.planTTL / 2)
        let renewed = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: previous(first), gatewayVersion: 1, now: later)
        #expect(renewed.isNewVersion)
        #expect(renewed.plan.version == 2)
        #expect(renewed.plan.issuedAt == later)
        #expect(renewed.plan.expiresAt == later.addingTimeInterval(86_400))
        #expect(renewed.contentHash == first.contentHash)
        #expect(renewed.plan.grant == first.plan.grant)
    }

    @Test func aPreviousPlanThatCannotBeAnsweredAgainGetsTheNextVersion() throws {
        let first = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: nil, now: now)
        let undecodable = PlanComposer.Previous(version: 1, contentHash: first.contentHash, plan: nil)
        #expect(try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: undecodable, now: now).plan.version == 2)
    }

    @Test func aNewDeviceBumpsTheVersion() throws {
        let first = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: nil, now: now)
        let second = try composer.compose(gatewayID: "gw-1", devices: [device("A1"), device("B2", model: "hygro-v2")],
                                          previous: previous(first), gatewayVersion: 1, now: now)
        #expect(second.plan.version == 2)
        #expect(second.isNewVersion)
        #expect(second.contentHash != first.contentHash)
        #expect(second.plan.devices.map(\.serial) == ["A1", "B2"])
        #expect(second.plan.devices[1] == DeviceGrant(serial: "B2", vendorID: "10c4", productID: "ea60", kind: .usb, path: nil))
    }

    @Test func appsAreTheUnionOfTheModelsAppsSortedByName() throws {
        let c = try composer.compose(gatewayID: "gw-1", devices: [device("A1"), device("B2", model: "hygro-v2"), device("C3")],
                                     previous: nil, now: now)
        #expect(c.plan.apps == [
            AppSpec(name: "hygro-agent", version: "2.1.0", runList: ["recipe[hygro_agent]"]),
            AppSpec(name: "thermo-agent", version: "1.0.0", runList: ["recipe[thermo_agent]"], inspecProfile: "thermo-agent"),
        ])
    }

    @Test func catalogChangeBumpsTheVersion() throws {
        let first = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: nil, now: now)
        var updated = configuration
        updated.apps[0].version = "1.1.0"
        let second = try PlanComposer(configuration: updated).compose(gatewayID: "gw-1", devices: [device("A1")], previous: previous(first),
                                                                      now: now)
        #expect(second.plan.version == 2)
        #expect(second.plan.apps[0].version == "1.1.0")
    }

    @Test func neverGoesBelowWhatTheGatewayHolds() throws {
        // The vendor lost its plan (restored database) but the gateway holds version 7.
        let fresh = try composer.compose(gatewayID: "gw-1", devices: [device("A1")], previous: nil, gatewayVersion: 7, now: now)
        #expect(fresh.plan.version == 8)
        var three = fresh.plan
        three.version = 3
        let stale = try composer.compose(gatewayID: "gw-1", devices: [device("A1")],
                                         previous: .init(version: 3, contentHash: fresh.contentHash, plan: three), gatewayVersion: 7, now: now)
        #expect(stale.plan.version == 8)
        #expect(stale.isNewVersion)
    }

    @Test func orderOfDevicesDoesNotChangeTheContent() throws {
        let a = try composer.compose(gatewayID: "gw-1", devices: [device("A1"), device("B2", model: "hygro-v2")], previous: nil, now: now)
        let b = try composer.compose(gatewayID: "gw-1", devices: [device("B2", model: "hygro-v2"), device("A1")], previous: nil, now: now)
        #expect(a.contentHash == b.contentHash)
        #expect(a.plan == b.plan)
    }

    @Test func devicesSharingAPathKeepTheFirstAndSuffixTheRest() throws {
        let c = try composer.compose(gatewayID: "gw-1", devices: [device("Z9"), device("A1"), device("B/2")], previous: nil, now: now)
        #expect(c.plan.devices.map(\.serial) == ["A1", "B/2", "Z9"])
        #expect(c.plan.devices.map(\.path) == ["/dev/ttyUSB0-A1", "/dev/ttyUSB0-B_2", "/dev/ttyUSB0"])
    }

    @Test func serialsGivingTheSameSuffixStillGetPathsOfTheirOwn() throws {
        let devices = [device("Z9"), device("A.1"), device("A:1"), device("A_1"),
                       device(String(repeating: "L", count: 32) + "x"), device(String(repeating: "L", count: 32) + "y")]
        let c = try composer.compose(gatewayID: "gw-1", devices: devices, previous: nil, now: now)
        let paths = c.plan.devices.compactMap(\.path)
        #expect(Set(paths).count == devices.count)
        #expect(paths.contains("/dev/ttyUSB0-A_1-2") && paths.contains("/dev/ttyUSB0-A_1-3"))
        // And the gateway accepts the plan.
        let signer = PlanSigner(privateKey: .init())
        _ = try PlanValidator(vendor: "acme", vendorKey: signer.publicKey, gatewayID: "gw-1").validate(try signer.sign(c.plan), held: .none, now: now)
    }

    @Test func devicesBeyondWhatGatewaysAcceptAreLeftOut() throws {
        let devices = (0..<(PlanValidator.maxDevices + 2)).map { device("S\($0)") }
        let c = try composer.compose(gatewayID: "gw-1", devices: devices, previous: nil, now: now)
        #expect(c.plan.devices.count == PlanValidator.maxDevices)
        #expect(c.omitted == ["S32", "S33"])
    }

    @Test func devicesOfModelsNoLongerInTheCatalogAreLeftOut() throws {
        let c = try composer.compose(gatewayID: "gw-1", devices: [device("A1"), device("X1", model: "retired")], previous: nil, now: now)
        #expect(c.plan.devices.map(\.serial) == ["A1"])
        #expect(c.omitted == ["X1"])
    }

    @Test func composedPlansPassTheGatewaysValidator() throws {
        let signer = PlanSigner(privateKey: .init())
        let c = try composer.compose(gatewayID: "gw-1", devices: [device("A1"), device("B2", model: "hygro-v2"), device("C3")],
                                     previous: nil, now: now)
        let validator = PlanValidator(vendor: "acme", vendorKey: signer.publicKey, gatewayID: "gw-1")
        let (plan, _) = try validator.validate(try signer.sign(c.plan), held: .none, now: now)
        #expect(plan == c.plan)
    }
}

@Suite("AppCatalog")
struct AppCatalogTests {
    let configuration = makeConfiguration(folder: URL(fileURLWithPath: "/nonexistent"))
    let now = Date(timeIntervalSince1970: 1_750_000_000)

    func device(_ serial: String, model: String = "thermo-v1") throws -> RegisteredDevice {
        let m = try #require(configuration.model(named: model))
        return RegisteredDevice(serial: serial, vendorID: m.vendorID, productID: m.productID, model: model, registeredAt: now)
    }

    func release(_ app: String, _ version: String, _ runList: [String], id: Int64) -> AppRelease {
        AppRelease(id: id, app: app, version: version, runList: runList, publishedAt: now)
    }

    @Test func newestReleaseOverridesVersionAndRunListButKeepsTheProfile() {
        let apps = AppCatalog.effective(baseline: configuration.apps, releases: [
            release("thermo-agent", "1.2.0", ["recipe[thermo_agent@1.2.0]"], id: 2),
            release("thermo-agent", "1.1.0", ["recipe[thermo_agent@1.1.0]"], id: 1),
            release("retired-agent", "9.0.0", ["recipe[gone]"], id: 3),
        ])
        #expect(apps == [
            AppSpec(name: "thermo-agent", version: "1.2.0", runList: ["recipe[thermo_agent@1.2.0]"], inspecProfile: "thermo-agent"),
            AppSpec(name: "hygro-agent", version: "2.1.0", runList: ["recipe[hygro_agent]"]),
        ])
        #expect(AppCatalog.effective(baseline: configuration.apps, releases: []) == configuration.apps)
    }

    @Test func aReleaseBumpsTheVersionOfPlansCarryingTheAppOnly() throws {
        let composer = PlanComposer(configuration: configuration)
        let thermo = try composer.compose(gatewayID: "gw-1", devices: [try device("A1")], previous: nil, now: now)
        let releases = [release("hygro-agent", "2.2.0", ["recipe[hygro_agent@2.2.0]"], id: 1)]

        // A plan without hygro-agent keeps its version.
        let same = try composer.applying(releases).compose(gatewayID: "gw-1", devices: [try device("A1")],
                                                           previous: .init(version: 1, contentHash: thermo.contentHash, plan: thermo.plan), now: now)
        #expect(same.plan.version == 1)
        #expect(!same.isNewVersion)

        let both = try composer.compose(gatewayID: "gw-2", devices: [try device("B1", model: "hygro-v2")], previous: nil, now: now)
        let bumped = try composer.applying(releases).compose(gatewayID: "gw-2", devices: [try device("B1", model: "hygro-v2")],
                                                             previous: .init(version: 1, contentHash: both.contentHash, plan: both.plan), now: now)
        #expect(bumped.plan.version == 2)
        #expect(bumped.isNewVersion)
        #expect(bumped.plan.apps.first { $0.name == "hygro-agent" }?.version == "2.2.0")
        // The same apps with new versions: an app update, not a widening the owner must approve again.
        #expect(bumped.plan.grant.change(from: both.plan.grant) == .appUpdate)
    }

    @Test func runListConcatenatesInAppOrderWithoutDuplicates() {
        let apps = [
            AppSpec(name: "a", version: "1", runList: ["recipe[base]", "recipe[a]"]),
            AppSpec(name: "b", version: "1", runList: ["recipe[b]", "recipe[base]", "role[web]"]),
        ]
        #expect(AppCatalog.runList(of: apps) == ["recipe[base]", "recipe[a]", "recipe[b]", "role[web]"])
        #expect(AppCatalog.runList(of: []) == [])
    }
}
