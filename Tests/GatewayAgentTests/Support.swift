import Crypto
import Foundation
import GatewayProtocol
@testable import GatewayAgent

enum Sample {
    nonisolated(unsafe) static let vendorKey = Curve25519.Signing.PrivateKey()  // immutable after init; tests only read it

    static func config(policy: GatewayConfig.Policy = .ask, caps: GatewayConfig.Caps? = nil) -> GatewayConfig {
        GatewayConfig(stateDirectory: "/tmp/x", controlSocket: "/tmp/x/control.sock",
                      lxd: .init(socket: nil, profiles: ["default", "iotgw-vendor"], network: "iotgwbr0", storagePool: "default"),
                      caps: caps ?? .init(cpus: 2, memoryMiB: 1024, diskMiB: 4096, processes: 1000, allowNesting: false),
                      vendors: [.init(id: "acme", name: "Acme Sensors", match: [.init(vendorID: "0403", productID: nil)],
                                      daemonURL: "http://127.0.0.1:8470", publicKey: Keys.encode(vendorKey.publicKey), policy: policy)])
    }

    static func plan(version: Int = 1, serials: [String] = ["SN1"], cpus: Int = 1) -> ProvisioningPlan {
        ProvisioningPlan(vendor: "acme", gatewayID: "gw-test", version: version, issuedAt: Date(), expiresAt: Date().addingTimeInterval(3600),
                         container: ContainerSpec(name: "iotgw-acme", image: ImageRef(alias: "iotgw-busybox", fingerprint: String(repeating: "a", count: 64)),
                                                  limits: ResourceLimits(cpus: cpus, memoryMiB: 128, diskMiB: 512, processes: 100), network: .nat),
                         devices: serials.map { DeviceGrant(serial: $0, vendorID: "0403", productID: "6001", kind: .unixChar, path: "/dev/ttyUSB0") },
                         apps: [AppSpec(name: "thermo", version: "1.0.0", runList: ["recipe[thermo]"])])
    }
}
