import AsyncHTTPClient
import Foundation
import GatewayProtocol
import NIOCore
import NIOHTTP1
import NIOFoundationCompat

/// The CLI's side of the control socket.
public struct ControlClient: Sendable {
    public let socketPath: String
    let http: HTTPClient

    public init(socketPath: String, http: HTTPClient = .shared) {
        self.socketPath = socketPath
        self.http = http
    }

    /// A failure the CLI shows as is.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var code: String
        public var message: String
        public var description: String { Fields.escaped(message) }
    }

    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: Data? = nil, as: T.Type) async throws -> T {
        try WireJSON.decoder().decode(T.self, from: try await raw(method, path, body: body))
    }

    /// The answer's body, or the daemon's error as a ``Failure``.
    func raw(_ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> Data {
        let host = socketPath.addingPercentEncoding(withAllowedCharacters: .urlHostAllowed) ?? socketPath
        var req = HTTPClientRequest(url: "http+unix://\(host)\(path)")
        req.method = method
        req.headers.add(name: "Host", value: "localhost")
        if let body {
            req.headers.add(name: "Content-Type", value: "application/json")
            req.body = .bytes(ByteBuffer(data: body))
        }
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await http.execute(req, timeout: .seconds(30))
            bytes = try await response.body.collect(upTo: 16 * 1024 * 1024)
        } catch {
            throw Failure(code: "unreachable", message: "cannot reach iot-gateway-client at \(socketPath) (is it running, are you root?): \(error)")
        }
        let data = Data(buffer: bytes)
        guard response.status.code < 300 else {
            let e = try? JSONDecoder().decode(ErrorBody.self, from: data)
            throw Failure(code: e?.error.code ?? "http\(response.status.code)", message: e?.error.message ?? "HTTP \(response.status.code)")
        }
        return data
    }

    public func status() async throws -> ControlAPI.Status { try await call(.GET, "/v1/status", as: ControlAPI.Status.self) }
    public func approvals(all: Bool = false) async throws -> [ControlAPI.Approval] {
        try await call(.GET, "/v1/approvals" + (all ? "?all=true" : ""), as: [ControlAPI.Approval].self)
    }
    public func approval(_ id: Int64) async throws -> ControlAPI.Approval { try await call(.GET, "/v1/approvals/\(id)", as: ControlAPI.Approval.self) }
    /// Decides an approval; approving needs the `digest` of the approval as shown.
    public func decide(_ id: Int64, approve: Bool, digest: String? = nil) async throws -> ControlAPI.Approval {
        try await call(.POST, "/v1/approvals/\(id)/decision",
                       body: try JSONEncoder().encode(ControlAPI.Decision(approve: approve, digest: digest)),
                       as: ControlAPI.Approval.self)
    }
    public func vendors() async throws -> [ControlAPI.Vendor] { try await call(.GET, "/v1/vendors", as: [ControlAPI.Vendor].self) }
    public func devices() async throws -> [ControlAPI.Device] { try await call(.GET, "/v1/devices", as: [ControlAPI.Device].self) }
    /// Managed containers of vendors no longer configured.
    public func orphans() async throws -> [Orphan] { try await call(.GET, "/v1/orphans", as: [Orphan].self) }
    /// Deletes the managed containers of a vendor no longer configured; returns their names.
    public func remove(vendor: String) async throws -> [String] {
        try await call(.POST, "/v1/vendors/\(vendor)/remove", as: ControlAPI.Removed.self).containers
    }
    /// The gateway's metrics in the Prometheus text format.
    public func metrics() async throws -> String { String(decoding: try await raw(.GET, "/v1/metrics"), as: UTF8.self) }
    /// Ends a vendor's live log relay; false when none was running.
    public func stopLogs(vendor: String) async throws -> Bool {
        try await call(.POST, "/v1/vendors/\(vendor)/logs-stop", as: ControlAPI.Stopped.self).stopped
    }
}
