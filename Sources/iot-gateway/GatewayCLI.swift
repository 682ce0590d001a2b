import ArgumentParser
import Foundation
import GatewayAgent
import GatewayProtocol

/// The gateway owner's command line: approvals, status, vendors, devices.
@main
struct GatewayCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iot-gateway",
        abstract: "Control the iot-gateway daemon: approve what vendors get, see what runs.",
        subcommands: [Status.self, Approvals.self, Approve.self, Deny.self, Vendors.self, Devices.self, LogsStop.self, Orphans.self, Remove.self,
                      Metrics.self])

    struct Connection: ParsableArguments {
        @Option(help: "The daemon's control socket.")
        var socket: String = ProcessInfo.processInfo.environment["IOT_GATEWAY_SOCKET"] ?? GatewayConfig.defaultControlSocket

        var client: ControlClient { ControlClient(socketPath: socket) }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Vendors, containers, devices and pending approvals.")
        @OptionGroup var connection: Connection
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let s = try await connection.client.status()
            if json { return try printJSON(s) }
            print(Render.safe("gateway \(s.gatewayID)   lxd: \(s.lxd)"))
            for d in s.imageDownloads ?? [] {
                let of = d.totalBytes.map { String(format: " of %.1f MiB (%.0f%%)", Double($0) / 1_048_576, Double(d.bytes) * 100 / Double(max($0, 1))) } ?? ""
                print(Render.safe("image sha256:\(d.fingerprint.prefix(12)) downloading for \(d.vendors.joined(separator: ", ")): "
                                  + String(format: "%.1f MiB", Double(d.bytes) / 1_048_576) + of))
            }
            print(Render.vendors(s.vendors))
            print(Render.devices(s.devices))
            print(s.pendingApprovals.isEmpty ? "no pending approvals" : Render.approvals(s.pendingApprovals))
        }
    }

    struct Approvals: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pending approvals.")
        @OptionGroup var connection: Connection
        @Flag(help: "Include decided and superseded ones.") var all = false
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let list = try await connection.client.approvals(all: all)
            if json { return try printJSON(list) }
            print(list.isEmpty ? "no pending approvals" : Render.approvals(list))
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show exactly what a vendor will get, and approve it.",
            discussion: "Without ID, the only pending approval is used. Prompts [y/N] unless --yes.")
        @OptionGroup var connection: Connection
        @Argument(help: "Approval ID (see 'iot-gateway approvals').") var id: Int64?
        @Flag(name: .shortAndLong, help: "Approve without asking (for scripts).") var yes = false
        @Flag(help: "Print the decided approval as JSON.") var json = false

        func run() async throws {
            let client = connection.client
            let approval: ControlAPI.Approval
            if let id {
                approval = try await client.approval(id)
            } else {
                let pending = try await client.approvals()
                guard pending.count == 1, let only = pending.first else {
                    if pending.isEmpty { throw CLIFailure("no pending approvals") }
                    throw CLIFailure("\(pending.count) approvals are pending; name one:\n" + Render.approvals(pending))
                }
                approval = only
            }
            guard approval.decision == "pending" else { throw CLIFailure("approval \(approval.id) is already \(approval.decision)") }
            // Unbuffered, so the details always precede the prompt, even on a pipe.
            if !json { FileHandle.standardOutput.write(Data((Render.detail(approval) + "\n").utf8)) }
            if !yes {
                FileHandle.standardOutput.write(Data(Render.safe("Approve vendor \(approval.vendor)'s plan v\(approval.planVersion)? [y/N] ").utf8))
                let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased()
                guard answer == "y" || answer == "yes" else {
                    print("not approved (nothing changed)")
                    throw ExitCode(1)
                }
            }
            // Bound to the digest of exactly what was shown: the daemon approves that plan or nothing.
            let decided = try await client.decide(approval.id, approve: true, digest: approval.digest)
            if json { return try printJSON(decided) }
            print(Render.safe("approved \(decided.id): \(decided.vendor) gets \(decided.container)"))
        }
    }

    struct Deny: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Deny a pending approval.")
        @OptionGroup var connection: Connection
        @Argument(help: "Approval ID.") var id: Int64
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let decided = try await connection.client.decide(id, approve: false)
            if json { return try printJSON(decided) }
            print(Render.safe("denied \(decided.id): \(decided.vendor) plan v\(decided.planVersion)"))
        }
    }

    struct Vendors: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Trusted vendors and their containers.")
        @OptionGroup var connection: Connection
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let v = try await connection.client.vendors()
            if json { return try printJSON(v) }
            print(Render.vendors(v))
        }
    }

    struct LogsStop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "logs-stop", abstract: "End a vendor's live log relay now.")
        @OptionGroup var connection: Connection
        @Argument(help: "The vendor's id.") var vendor: String

        func validate() throws {
            guard Fields.vendorID.isValid(vendor) else { throw ValidationError("vendor must be \(Fields.vendorID.form)") }
        }

        func run() async throws {
            let stopped = try await connection.client.stopLogs(vendor: vendor)
            print(Render.safe(stopped ? "stopped the log relay of \(vendor)" : "no log relay of \(vendor) was running"))
        }
    }

    struct Orphans: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Containers of vendors no longer in the configuration (stopped, deleted after the grace period).")
        @OptionGroup var connection: Connection
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let orphans = try await connection.client.orphans()
            if json { return try printJSON(orphans) }
            if orphans.isEmpty { return print("no orphaned containers") }
            for o in orphans {
                let when = o.deleteAfter.map { "deleted after \($0.formatted(.iso8601))" } ?? "being stopped"
                print(Render.safe("\(o.container)  vendor \(o.vendor ?? "-")  \(o.status)  \(when)"))
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete the containers of a vendor you removed from the configuration, now instead of after the grace period.")
        @OptionGroup var connection: Connection
        @Argument(help: "The vendor's id.") var vendor: String

        func validate() throws {
            guard Fields.vendorID.isValid(vendor) else { throw ValidationError("vendor must be \(Fields.vendorID.form)") }
        }

        func run() async throws {
            let deleted = try await connection.client.remove(vendor: vendor)
            print(Render.safe(deleted.isEmpty ? "no container of \(vendor) to delete" : "deleted \(deleted.joined(separator: ", "))"))
        }
    }

    struct Metrics: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The gateway's metrics, in the Prometheus text format.",
            discussion: "Events, approvals, containers, device attaches, deliveries, plans and fleet messages, per vendor.")
        @OptionGroup var connection: Connection

        func run() async throws {
            // Label values are the owner's vendor ids and fixed words; escaped all the same, line by line.
            print(Render.safeLines(try await connection.client.metrics()), terminator: "")
        }
    }

    struct Devices: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Devices seen by the gateway.")
        @OptionGroup var connection: Connection
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let d = try await connection.client.devices()
            if json { return try printJSON(d) }
            print(Render.devices(d))
        }
    }
}

struct CLIFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

func printJSON(_ value: some Encodable) throws {
    print(String(decoding: try ControlAPI.encoder().encode(value), as: UTF8.self))
}
