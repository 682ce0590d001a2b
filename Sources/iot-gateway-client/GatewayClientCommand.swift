import ArgumentParser
import AsyncHTTPClient
import Foundation
import GatewayAgent
import GatewayProtocol
import Logging
import ServiceLifecycle

/// The gateway daemon: watches udev, asks vendors, waits for the owner, provisions LXD containers.
@main
struct GatewayClientCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iot-gateway-client",
        abstract: "The iot-gateway daemon: provisions one LXD container per device vendor.",
        subcommands: [Run.self, Identity.self, CheckConfig.self],
        defaultSubcommand: Run.self)

    struct Options: ParsableArguments {
        @Option(name: .shortAndLong, help: "Gateway configuration file.")
        var config: String = GatewayConfig.defaultPath

        @Option(help: "Log level (trace, debug, info, notice, warning, error).")
        var logLevel: Logger.Level = .info

        func load() throws -> GatewayConfig {
            do { return try GatewayConfig.load(path: config) } catch let e as ConfigError {
                throw ValidationError(e.message)
            }
        }
    }

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the daemon.")
        @OptionGroup var options: Options

        func run() async throws {
            IdleMemory.limitArenas()
            let config = try options.load()
            LoggingSystem.bootstrap { label in
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = .trace
                return h
            }
            var logger = Logger(label: "iot-gateway-client")
            logger.logLevel = options.logLevel
            // Vendors get their own client: no redirects, and a vendor's slow server never holds LXD's connections (DaemonHTTP).
            let vendorHTTP = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: VendorClient.httpConfiguration)
            let lxdHTTP = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: DaemonHTTP.lxd)
            let agent: GatewayAgent
            do {
                agent = try GatewayAgent.make(config: config, lxdHTTP: lxdHTTP, vendorHTTP: vendorHTTP, logger: logger)
            } catch let e as GatewayError {
                try? await vendorHTTP.shutdown()
                try? await lxdHTTP.shutdown()
                logger.critical("cannot start", metadata: ["iotgw.error": "\(e.message)"])
                throw ValidationError(e.message)
            }
            let watcher = DeviceWatcher(agent: agent, logger: logger)
            let control = try ControlServer.build(agent: agent, logger: logger)
            logger.notice("starting", metadata: ["iotgw.gateway": "\(agent.identity.id)", "iotgw.control": "\(config.controlSocket)"])
            // The rehearsal ends on its own (its failure only logged): the daemon goes on.
            let rehearsal = ServiceGroupConfiguration.ServiceConfiguration(service: Rehearsal(config: config, logger: logger),
                                                                           successTerminationBehavior: .ignore,
                                                                           failureTerminationBehavior: .ignore)
            let group = ServiceGroup(configuration: .init(services: [.init(service: agent), .init(service: watcher), .init(service: control),
                                                                     rehearsal],
                                                          gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            do { try await group.run() } catch {
                try? await vendorHTTP.shutdown()
                try? await lxdHTTP.shutdown()
                throw error
            }
            try await vendorHTTP.shutdown()
            try await lxdHTTP.shutdown()
        }
    }

    struct Identity: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print this gateway's id and public key (creating them on first use).")
        @OptionGroup var options: Options
        @Flag var json = false

        func run() async throws {
            let config = try options.load()
            let id: GatewayIdentity
            do { id = try IdentityStore.loadOrCreate(stateDirectory: config.stateDirectory) } catch let e as GatewayError {
                throw ValidationError(e.message)
            }
            if json {
                print("{\"gatewayID\":\"\(id.id)\",\"publicKey\":\"\(id.publicKey)\"}")
            } else {
                print("gateway id:  \(id.id)\npublic key:  \(id.publicKey)")
            }
        }
    }

    struct CheckConfig: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate the configuration file.")
        @OptionGroup var options: Options
        func run() async throws {
            let c = try options.load()
            print("ok: \(c.vendors.count) vendor(s)")
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
