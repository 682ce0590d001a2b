import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// Who signs the requests: a Chef user or client name and its private key.
public struct ChefCredentials: Sendable {
    public var name: String
    public var key: ChefPrivateKey

    public init(name: String, key: ChefPrivateKey) {
        self.name = name
        self.key = key
    }

    /// - Throws: `ChefError` `.invalidKey` if `pem` is not an RSA private key.
    public init(name: String, pemRepresentation pem: String) throws {
        self.init(name: name, key: try ChefPrivateKey(pemRepresentation: pem))
    }
}

/// A typed async client of the Chef Infra Server API (and goiardi), signing every request with
/// Mixlib::Authentication.
///
/// One `HTTPClient` serves the whole process and is injected; every call has a timeout and reads
/// bodies with a size limit. The client is a value: `signing(as:)` gives a copy that signs as
/// another identity (knife saves the node as the freshly created client).
public struct ChefClient: Sendable {
    /// Scheme, host and port (plus any path prefix), without a trailing slash.
    public let serverURL: String
    /// Chef Infra Server organization; `nil` for servers without organizations (goiardi).
    public let organization: String?
    /// The identity requests are signed as.
    public var credentials: ChefCredentials
    /// `X-Ops-Sign` version; Chef's default is 1.1.
    public var signingProtocol: ChefSigningProtocol = .v1_1
    /// `X-Ops-Server-API-Version`. goiardi supports 0 and 1; Chef Infra Server 0 to 2.
    public var serverAPIVersion = "1"
    /// `X-Chef-Version` sent with each request.
    public var chefVersion = "18.0.0"
    /// Timeout of one HTTP exchange.
    public var requestTimeout: TimeAmount = .seconds(30)
    /// Largest response body this client reads.
    public var maxResponseBytes = 16 * 1024 * 1024
    /// Source of `X-Ops-Timestamp`; the server rejects requests more than its time slew
    /// (15 minutes by default) away from its own clock.
    public var now: @Sendable () -> Date = { Date() }

    let http: HTTPClient
    let logger: Logger

    /// - Parameters:
    ///   - serverURL: e.g. `http://127.0.0.1:4545` (goiardi) or `https://chef.example.com`.
    ///   - organization: the Chef Infra Server organization (requests go to
    ///     `/organizations/NAME/...`); `nil` for goiardi, which has no organizations and answers
    ///     `/organizations/...` paths with an empty 200.
    ///   - httpClient: the process's HTTP client.
    /// - Throws: `ChefError` `.invalidArgument` for a URL that is not http(s) or has a query.
    public init(serverURL: String, organization: String? = nil, credentials: ChefCredentials,
                httpClient: HTTPClient = .shared, logger: Logger) throws {
        var url = serverURL
        while url.hasSuffix("/") { url.removeLast() }
        guard url.hasPrefix("http://") || url.hasPrefix("https://"), !url.contains("?"), !url.contains("#"),
              url.split(separator: "/", omittingEmptySubsequences: false).count >= 3,
              !url.split(separator: "/", omittingEmptySubsequences: false)[2].isEmpty else {
            throw ChefError(code: .invalidArgument, message: "Chef server URL must be http(s)://host[:port][/prefix], got '\(serverURL)'")
        }
        if let organization { try Self.validateName(organization, "organization") }
        self.serverURL = url
        self.organization = organization
        self.credentials = credentials
        self.http = httpClient
        self.logger = logger
    }

    /// `/organizations/NAME`, or `""` without an organization.
    public var organizationPath: String { organization.map { "/organizations/\($0)" } ?? "" }

    /// The base every API path is appended to; also what `chef_server_url` in `client.rb` must be.
    public var baseURL: String { serverURL + organizationPath }

    /// The same server and settings, signing as `credentials`.
    public func signing(as credentials: ChefCredentials) -> ChefClient {
        var copy = self
        copy.credentials = credentials
        return copy
    }

    // MARK: - Raw exchange

    struct RawResponse: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: ByteBuffer
    }

    /// Sends one signed request to an absolute URL and collects the (bounded) response.
    func exchange(_ method: HTTPMethod, url: String, body: [UInt8] = [], contentType: String = "application/json",
                  extraHeaders: HTTPHeaders = [:], apiVersion: String? = nil) async throws -> RawResponse {
        let signer = ChefRequestSigner(userID: credentials.name, key: credentials.key, protocolVersion: signingProtocol,
                                       serverAPIVersion: apiVersion ?? serverAPIVersion, chefVersion: chefVersion)
        let path = Self.path(of: url)
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers = try signer.headers(method: method.rawValue, path: path, body: body, date: now(), contentType: contentType)
        request.headers.add(contentsOf: extraHeaders)
        if !body.isEmpty { request.body = .bytes(ByteBuffer(bytes: body)) }
        do {
            let response = try await http.execute(request, timeout: requestTimeout, logger: logger)
            let collected = try await response.body.collect(upTo: maxResponseBytes)
            let status = Int(response.status.code)
            logger.debug("chef request done", metadata: [
                "chef.method": "\(method.rawValue)", "chef.path": "\(path)", "chef.status": "\(status)",
                "chef.user": "\(credentials.name)",
            ])
            return RawResponse(status: status, headers: response.headers, body: collected)
        } catch let e as NIOTooManyBytesError {
            throw ChefError(code: .invalidResponse, message: "\(method) \(path): response larger than \(e.maxBytes ?? maxResponseBytes) bytes")
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout {
            throw ChefError(code: .timeout, message: "\(method) \(url): \(e)")
        } catch let e as CancellationError {
            throw e
        } catch let e as ChefError {
            throw e
        } catch {
            throw ChefError(code: .unreachable, message: "\(method) \(url): \(error)")
        }
    }

    /// `exchange` for an API path relative to `baseURL` (like `nodes/web01`).
    func exchange(_ method: HTTPMethod, _ apiPath: String, body: [UInt8] = [], apiVersion: String? = nil) async throws -> RawResponse {
        try await exchange(method, url: baseURL + "/" + apiPath, body: body, apiVersion: apiVersion)
    }

    /// Throws the Chef error carried by a non-2xx response, keeping the server's `error` array.
    static func check(_ raw: RawResponse) throws {
        guard !(200..<300).contains(raw.status) else { return }
        let messages: [String]
        if let body = try? JSONDecoder().decode(ChefErrorBody.self, from: raw.body) {
            messages = body.messages
        } else {
            let text = String(buffer: raw.body)
            messages = [text.isEmpty ? "HTTP \(raw.status) without a body" : String(text.prefix(2000))]
        }
        throw ChefError.fromHTTP(status: raw.status, messages: messages)
    }

    func decode<T: Decodable>(_ type: T.Type, from raw: RawResponse) throws -> T {
        guard raw.body.readableBytes > 0 else {
            // goiardi answers unknown prefixes such as /organizations/... with 200 and no body.
            throw ChefError(code: .invalidResponse, status: raw.status,
                            message: "empty response where \(T.self) was expected (organization \(organization.map { "'\($0)'" } ?? "none") right for this server?)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: raw.body)
        } catch {
            throw ChefError(code: .invalidResponse, status: raw.status, message: "cannot decode \(T.self): \(error)")
        }
    }

    static func encode<B: Encodable>(_ body: B) throws -> [UInt8] {
        Array(try JSONText.encode(body).utf8)
    }

    static func encode(_ node: ChefNode) throws -> [UInt8] {
        Array(try node.orderedJSON().utf8)
    }

    /// A checked call whose JSON answer is decoded as `T`.
    func call<T: Decodable>(_ method: HTTPMethod, _ apiPath: String, body: [UInt8] = [], apiVersion: String? = nil,
                            as: T.Type) async throws -> T {
        let raw = try await exchange(method, apiPath, body: body, apiVersion: apiVersion)
        try Self.check(raw)
        return try decode(T.self, from: raw)
    }

    /// A checked call whose answer is ignored.
    func call(_ method: HTTPMethod, _ apiPath: String, body: [UInt8] = []) async throws {
        try Self.check(try await exchange(method, apiPath, body: body))
    }

    // MARK: - Helpers

    /// The path part of an absolute URL, as sent on the request line (undecoded, query kept; the
    /// signer drops the query).
    static func path(of url: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url }
        let afterScheme = url[schemeEnd.upperBound...]
        guard let slash = afterScheme.firstIndex(of: "/") else { return "/" }
        return String(afterScheme[slash...])
    }

    /// Chef object names: letters, digits, `_`, `-`, `.`, `:`. Checked before they go into a
    /// URL path so nothing needs escaping and the signed path is the sent path.
    static func validateName(_ name: String, _ what: String) throws {
        let ok = !name.isEmpty && name.utf8.count <= 255 && name.unicodeScalars.allSatisfy {
            ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || "_-.:".unicodeScalars.contains($0)
        }
        guard ok else {
            throw ChefError(code: .invalidArgument, message: "invalid \(what) name '\(name)': use letters, digits, '_', '-', '.', ':'")
        }
    }
}
