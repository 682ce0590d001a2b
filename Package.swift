// swift-tools-version:6.1
import PackageDescription

// The gateway's executables in release, on Linux: linked by lld with packed relative relocations
// (DT_RELR: 145,000 relocations in 28 KB instead of 3.4 MB, all of which the loader reads at start)
// and no exported dynamic symbols (the static Swift runtime's link arguments export every symbol,
// which the loader then hashes and searches). Measured on iot-gateway-client started idle: RSS 47.1
// to 37.4 MiB. DT_RELR needs glibc 2.36 (Debian 12) at run time; the loader says so on older ones.
let leanRelease: [LinkerSetting] = [
    .unsafeFlags(["-use-ld=lld", "-Xlinker", "--no-export-dynamic", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"],
                 .when(platforms: [.linux], configuration: .release)),
]

// Layers (never import upward): adapters (CUdev/Udev, LXD) and the wire protocol know nothing of
// the gateway; GatewayAgent turns them into services; executables only wire.
let package = Package(
    name: "iot-gateway",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LXD", targets: ["LXD"]),
        .library(name: "Udev", targets: ["Udev"]),
        .library(name: "GatewayProtocol", targets: ["GatewayProtocol"]),
        .library(name: "MQTT", targets: ["MQTT"]),
        .executable(name: "iot-gateway-client", targets: ["iot-gateway-client"]),
        .executable(name: "iot-gateway", targets: ["iot-gateway"]),
        .executable(name: "iot-daemon", targets: ["iot-daemon"]),
        .executable(name: "lxd-bench", targets: ["lxd-bench"]),
        .executable(name: "udev-probe", targets: ["udev-probe"]),
        .executable(name: "iotgw-devsim", targets: ["iotgw-devsim"]),
        .executable(name: "iotgw-fleetsim", targets: ["iotgw-fleetsim"]),
        .executable(name: "iot-gateway-hostctl", targets: ["iot-gateway-hostctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // MARK: Adapters
        .systemLibrary(name: "CUdev", pkgConfig: "libudev", providers: [.apt(["libudev-dev"])]),
        .target(name: "Udev", dependencies: ["CUdev", .product(name: "Logging", package: "swift-log")]),
        // Test support only: drives the real libudev with simulated devices (umockdev).
        .systemLibrary(name: "CUmockdev", pkgConfig: "umockdev-1.0", providers: [.apt(["libumockdev-dev"])]),
        .target(name: "UmockdevTesting", dependencies: ["CUmockdev"]),
        .target(
            name: "LXD",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),

        // Adapter: Chef Server API (signed requests) and what knife bootstrap writes on a node.
        .target(
            name: "Chef",
            dependencies: [
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Adapter: MQTT through libmosquitto (TLS, QoS 1, retained, last will, reconnect). Only MQTT
        // imports CMosquitto; it calls OpenSSL too, to count the TLS records a broker sends. Both are
        // loaded when a client is first made, not linked (CMosquitto/loader.c): headers from Debian's
        // libmosquitto-dev and libssl-dev, libmosquitto1 at run time.
        .target(name: "CMosquitto"),
        .target(name: "MQTT", dependencies: ["CMosquitto", .product(name: "Logging", package: "swift-log")]),

        // Adapter: InSpec's JSON reporter output and verdicts.
        .target(name: "InSpec"),

        // MARK: Protocol between gateway and vendor (wire types, signatures, plan validation)
        .target(name: "GatewayProtocol", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),

        // MARK: Gateway core and vendor service
        .target(
            name: "GatewayAgent",
            dependencies: [
                "LXD", "Udev", "GatewayProtocol", "Chef", "InSpec", "MQTT",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "VendorService",
            dependencies: [
                "GatewayProtocol", "Chef", "MQTT",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),

        // Simulated gateways at fleet scale (signed requests, verified plans, reports) for benchmarks and tests:
        // the gateway's side of the wire protocol only, no gateway core.
        .target(
            name: "FleetSimulation",
            dependencies: [
                "GatewayProtocol", "MQTT",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Host updater (issue 10): updates iot-gateway-client itself and rolls it back when unhealthy.
        // Deliberately small and free of GatewayAgent: it must keep working while the agent is crashed or
        // wedged. GatewayProtocol is Crypto and Foundation only (the signed-envelope domain tags).
        .target(
            name: "HostUpdate",
            dependencies: [
                "GatewayProtocol",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Executables (thin: configuration and wiring)
        .executableTarget(
            name: "iot-gateway-client",
            dependencies: [
                "GatewayAgent", "GatewayProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            linkerSettings: leanRelease
        ),
        .executableTarget(
            name: "iot-gateway",
            dependencies: [
                "GatewayAgent", "GatewayProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            linkerSettings: leanRelease
        ),
        .executableTarget(
            name: "iot-daemon",
            dependencies: [
                "VendorService", "GatewayProtocol", "MQTT",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            linkerSettings: leanRelease
        ),
        .executableTarget(
            name: "lxd-bench",
            dependencies: [
                "LXD",
                // `lxd-bench reconcile` drives the gateway core in-process against the real LXD.
                "GatewayAgent",
                "GatewayProtocol",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "udev-probe",
            dependencies: ["Udev", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Simulates plugging USB devices for the demo and benchmarks (umockdev testbed + child process).
        .executableTarget(
            name: "iotgw-devsim",
            dependencies: ["UmockdevTesting", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        .executableTarget(
            name: "iotgw-fleetsim",
            dependencies: [
                "FleetSimulation", "VendorService", "GatewayProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        .executableTarget(
            name: "iot-gateway-hostctl",
            dependencies: [
                "HostUpdate", "GatewayProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            linkerSettings: leanRelease
        ),

        // MARK: Tests
        .testTarget(name: "LXDTests", dependencies: ["LXD"], resources: [.copy("Fixtures")]),
        .testTarget(
            name: "ChefTests",
            dependencies: [
                "Chef",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(name: "MQTTTests", dependencies: ["MQTT"]),
        .testTarget(name: "InSpecTests", dependencies: ["InSpec"], resources: [.copy("Fixtures")]),
        .testTarget(name: "UdevTests", dependencies: ["Udev", "UmockdevTesting"]),
        .testTarget(name: "GatewayProtocolTests", dependencies: ["GatewayProtocol", .product(name: "Crypto", package: "swift-crypto")]),
        .testTarget(
            name: "GatewayAgentTests",
            dependencies: [
                "GatewayAgent", "GatewayProtocol", "LXD",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Real LXD, real daemons and CLI as processes, real libudev driven by umockdev.
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "LXD", "GatewayProtocol", "GatewayAgent", "UmockdevTesting", "InSpec", "Chef", "FleetSimulation",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The updater against a local update server, real ansible-playbook and the real iot-gateway-client.
        .testTarget(
            name: "HostUpdateTests",
            dependencies: [
                "HostUpdate", "GatewayProtocol",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "VendorServiceTests",
            dependencies: [
                "VendorService", "GatewayProtocol", "Chef",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
