import AsyncHTTPClient
import Foundation
import NIOFoundationCompat
import Logging
import NIOCore
import NIOHTTP1

/// A typed async client of the LXD 5.0 REST API over LXD's unix socket.
///
/// One `HTTPClient` serves the whole process and is injected; every call has a timeout and reads
/// bodies with a size limit. Async calls (`202`) are waited on until their operation is final.
public struct LXDClient: Sendable {
    /// The unix socket this client talks to.
    public let socketPath: String
    /// LXD project (`nil` = `default`).
    public var project: String?
    /// When set (and `project` is nil), an instance's requests go to the project this names for the
    /// instance (nil: `default`), and instance listings span all projects: the gateway keeps each
    /// vendor's container in a restricted project of its own.
    public var projectRouting: (@Sendable (String) -> String?)?
    /// Timeout of a single HTTP exchange (not of waiting on an operation).
    public var requestTimeout: TimeAmount = .seconds(30)
    /// Default deadline for async operations (create, start, exec...).
    public var operationTimeout: Duration = .seconds(300)
    /// Largest JSON response this client reads.
    public var maxResponseBytes = 64 * 1024 * 1024

    let http: HTTPClient
    let logger: Logger
    let baseURL: String

    /// - Parameters:
    ///   - socketPath: explicit socket; `nil` runs `LXDSocket.discover()`.
    ///   - httpClient: the process's HTTP client.
    public init(socketPath: String? = nil, httpClient: HTTPClient = .shared, logger: Logger,
                environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        let path = try socketPath ?? LXDSocket.discover(environment: environment)
        self.socketPath = path
        self.http = httpClient
        self.logger = logger
        let host = path.addingPercentEncoding(withAllowedCharacters: .urlHostAllowed) ?? path
        self.baseURL = "http+unix://\(host)"
    }

    // MARK: - Raw exchange

    struct RawResponse: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    /// Builds `/1.0/...?...` with every query value percent-encoded, plus `project` if set.
    func uri(_ path: String, _ query: [(String, String)] = []) -> String {
        var items = query
        if let project = project ?? routedProject(path), project != "default" { items.append(("project", project)) }
        guard !items.isEmpty else { return path }
        let encoded = items.map { "\($0.0)=\(Self.queryEscape($0.1))" }.joined(separator: "&")
        return path + (path.contains("?") ? "&" : "?") + encoded
    }

    /// The project `projectRouting` gives the instance a `/1.0/instances/<name>...` path is about.
    func routedProject(_ path: String) -> String? {
        let prefix = "/1.0/instances/"
        guard let projectRouting, path.hasPrefix(prefix) else { return nil }
        let escaped = path.dropFirst(prefix.count).prefix { $0 != "/" && $0 != "?" }
        return String(escaped).removingPercentEncoding.flatMap(projectRouting)
    }

    static func queryEscape(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~/")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    static func pathEscape(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    func makeRequest(_ method: HTTPMethod, _ uri: String, headers: HTTPHeaders = [:], body: HTTPClientRequest.Body? = nil) -> HTTPClientRequest {
        var req = HTTPClientRequest(url: baseURL + uri)
        req.method = method
        req.headers = headers
        // Go's HTTP/1.1 server rejects requests without Host; LXD's own client sends "unix.socket".
        req.headers.replaceOrAdd(name: "Host", value: "unix.socket")
        req.body = body
        return req
    }

    /// Sends a request and returns the response with its body collected (bounded).
    func exchange(_ request: HTTPClientRequest, timeout: TimeAmount? = nil, limit: Int? = nil) async throws -> RawResponse {
        if let err = LXDSocket.probe(socketPath) {
            throw LXDError(code: .unreachable, message: "LXD is not answering on \(socketPath): \(String(cString: strerror(err)))")
        }
        do {
            let response = try await http.execute(request, timeout: timeout ?? requestTimeout, logger: logger)
            let body = try await response.body.collect(upTo: limit ?? maxResponseBytes)
            return RawResponse(status: Int(response.status.code), headers: response.headers, body: body)
        } catch let e as NIOTooManyBytesError {
            throw LXDError(code: .invalidResponse, message: "\(request.method) \(request.url): response larger than \(e.maxBytes ?? 0) bytes")
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout {
            throw LXDError(code: .timeout, message: "\(request.method) \(request.url): \(e)")
        } catch let e as HTTPClientError {
            throw LXDError(code: .unreachable, message: "\(socketPath): \(e)")
        } catch let e as LXDError {
            throw e
        } catch let e as CancellationError {
            throw e
        } catch {
            throw LXDError(code: .unreachable, message: "\(socketPath): \(error)")
        }
    }

    /// Throws the LXD error carried by a non-2xx response.
    func check(_ raw: RawResponse) throws {
        guard raw.status >= 300 else { return }
        let env = try? JSONDecoder().decode(ErrorEnvelope.self, from: raw.body)
        let message = env?.error ?? String(buffer: raw.body)
        throw LXDError.fromHTTP(status: env?.errorCode ?? raw.status, message: message)
    }

    func decode<T: Decodable>(_ type: T.Type, from raw: RawResponse) throws -> T { try Self.decode(type, from: raw) }

    static func decode<T: Decodable>(_ type: T.Type, from raw: RawResponse) throws -> T {
        do {
            let env = try JSONDecoder().decode(ResponseEnvelope<T>.self, from: raw.body)
            guard let m = env.metadata else {
                throw LXDError(code: .invalidResponse, status: raw.status, message: "response has no metadata")
            }
            return m
        } catch let e as LXDError {
            throw e
        } catch {
            throw LXDError(code: .invalidResponse, status: raw.status, message: "cannot decode \(T.self): \(error)")
        }
    }

    static func jsonBody<B: Encodable>(_ body: B) throws -> HTTPClientRequest.Body {
        let data = try JSONEncoder().encode(body)
        return .bytes(ByteBuffer(bytes: data))
    }

    static let jsonHeaders: HTTPHeaders = ["Content-Type": "application/json"]

    // MARK: - Sync and async calls

    /// A sync call whose metadata is decoded as `T`; returns the ETag too.
    func sync<T: Decodable>(_ method: HTTPMethod, _ path: String, query: [(String, String)] = [], as: T.Type) async throws -> (T, String?) {
        let raw = try await exchange(makeRequest(method, uri(path, query)))
        try check(raw)
        return (try decode(T.self, from: raw), raw.headers.first(name: "ETag"))
    }

    /// A sync call with a JSON body whose response metadata is ignored.
    func syncSend<B: Encodable>(_ method: HTTPMethod, _ path: String, body: B, ifMatch: String? = nil) async throws {
        var headers = Self.jsonHeaders
        if let ifMatch { headers.add(name: "If-Match", value: ifMatch) }
        let raw = try await exchange(makeRequest(method, uri(path), headers: headers, body: try Self.jsonBody(body)))
        try check(raw)
    }

    /// An async call: sends, then waits for the operation to finish; throws if it failed.
    @discardableResult
    func asyncCall(_ method: HTTPMethod, _ path: String, query: [(String, String)] = [], headers: HTTPHeaders = [:],
                   body: HTTPClientRequest.Body? = nil, timeout: Duration? = nil, requestTimeout: TimeAmount? = nil) async throws -> LXDOperation {
        try Self.finished(try await asyncOperation(method, path, query: query, headers: headers, body: body,
                                                   timeout: timeout, requestTimeout: requestTimeout))
    }

    /// An async call that returns the final operation whatever its outcome.
    func asyncOperation(_ method: HTTPMethod, _ path: String, query: [(String, String)] = [], headers: HTTPHeaders = [:],
                        body: HTTPClientRequest.Body? = nil, timeout: Duration? = nil, requestTimeout: TimeAmount? = nil) async throws -> LXDOperation {
        let raw = try await exchange(makeRequest(method, uri(path, query), headers: headers, body: body), timeout: requestTimeout)
        try check(raw)
        let env: ResponseEnvelope<LXDOperation>
        do {
            env = try JSONDecoder().decode(ResponseEnvelope<LXDOperation>.self, from: raw.body)
        } catch {
            throw LXDError(code: .invalidResponse, status: raw.status, message: "expected an async response: \(error)")
        }
        guard env.type == "async", !env.operation.isEmpty else {
            throw LXDError(code: .invalidResponse, status: raw.status, message: "expected an async response, got \(env.type)")
        }
        return try await waitOperation(env.operation, timeout: timeout ?? operationTimeout)
    }

    /// Turns a final operation into a value or a matchable error carrying LXD's `err`.
    static func finished(_ op: LXDOperation) throws -> LXDOperation {
        switch op.statusCode {
        case 200: return op
        case 401: throw LXDError(code: .operationCancelled, status: 401, message: op.err.isEmpty ? "operation cancelled" : op.err)
        default: throw LXDError(code: .operationFailed, status: op.statusCode, message: op.err)
        }
    }

    /// Waits on `/1.0/operations/<id>/wait` until the operation is final or `timeout` passes.
    ///
    /// LXD 5.0 answers a `/wait` whose own timeout elapsed with 200 and the *running* state, so this
    /// loops in slices; it must start right after the 202, since LXD forgets finished operations after 5 s.
    public func waitOperation(_ operationPath: String, timeout: Duration) async throws -> LXDOperation {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            let remaining = clock.now.duration(to: deadline)
            guard remaining > .zero else {
                throw LXDError(code: .timeout, message: "operation \(operationPath) still running after \(timeout)")
            }
            let slice = max(1, min(30, Int(remaining.components.seconds) + (remaining.components.attoseconds > 0 ? 1 : 0)))
            let raw = try await exchange(makeRequest(.GET, uri(operationPath + "/wait", [("timeout", String(slice))])),
                                         timeout: .seconds(Int64(slice) + 15))
            do { try check(raw) } catch let e as LXDError where e.code == .notFound {
                // Waited on from its 202 on, so LXD did not forget it after finishing: LXD restarted under it.
                throw LXDError(code: .operationLost, status: e.status, message: "operation \(operationPath): \(e.message)")
            }
            let op = try decode(LXDOperation.self, from: raw)
            if op.isFinal { return op }
        }
    }
}
