import Crypto
import Foundation
import NIOHTTP1

/// The `X-Ops-Sign` protocol versions of Mixlib::Authentication this client speaks.
public enum ChefSigningProtocol: String, Sendable, CaseIterable, CustomStringConvertible {
    /// SHA-1 hashes, user id in clear, raw RSA private-key encryption of the canonical request.
    case v1_0 = "1.0"
    /// As 1.0 with the user id hashed: Chef's default (`authentication_protocol_version "1.1"`).
    case v1_1 = "1.1"
    /// SHA-256 hashes and an RSASSA-PKCS1-v1_5/SHA-256 signature; covers the server API version.
    case v1_3 = "1.3"

    /// The `X-Ops-Sign` header value.
    public var signHeader: String {
        switch self {
        case .v1_0: "algorithm=sha1;version=1.0;"
        case .v1_1: "algorithm=sha1;version=1.1;"
        case .v1_3: "algorithm=sha256;version=1.3;"
        }
    }

    public var description: String { rawValue }
}

/// Signs Chef Server API requests exactly as Mixlib::Authentication's `SignedHeaderAuth` does
/// (`lib/mixlib/authentication/signedheaderauth.rb`, 3.2.0). Pure: no I/O, the time is an argument.
public struct ChefRequestSigner: Sendable {
    /// `X-Ops-Userid`: the client or user name.
    public var userID: String
    public var key: ChefPrivateKey
    public var protocolVersion: ChefSigningProtocol
    /// `X-Ops-Server-API-Version`. Always sent: goiardi puts `""` into the 1.3 canonical request
    /// when the header is absent while Mixlib puts `"0"`, so omitting it breaks 1.3 on goiardi.
    public var serverAPIVersion: String
    /// `X-Chef-Version` (informational; goiardi ignores it).
    public var chefVersion: String

    /// Length of each `X-Ops-Authorization-N` line.
    public static let authorizationLineLength = 60

    public init(userID: String, key: ChefPrivateKey, protocolVersion: ChefSigningProtocol = .v1_1,
                serverAPIVersion: String = "1", chefVersion: String = "18.0.0") {
        self.userID = userID
        self.key = key
        self.protocolVersion = protocolVersion
        self.serverAPIVersion = serverAPIVersion
        self.chefVersion = chefVersion
    }

    /// The headers of a signed request, in the order Chef sends them: `Accept`, `X-Chef-Version`,
    /// `X-Ops-Sign`, `X-Ops-Userid`, `X-Ops-Timestamp`, `X-Ops-Content-Hash`,
    /// `X-Ops-Server-API-Version`, `X-Ops-Authorization-1...N`, then `Content-Type` if there is a body.
    ///
    /// - Parameters:
    ///   - path: the URL path as sent (it is normalised for signing; a query string is ignored).
    ///   - body: the exact body bytes (empty for GET/DELETE).
    ///   - contentType: sent only when `body` is not empty.
    public func headers(method: String, path: String, body: [UInt8] = [], date: Date,
                        contentType: String = "application/json") throws -> HTTPHeaders {
        try headers(method: method, path: path, body: body, timestamp: Self.timestamp(date), contentType: contentType)
    }

    /// As `headers(method:path:body:date:contentType:)` with a preformatted `X-Ops-Timestamp`.
    public func headers(method: String, path: String, body: [UInt8] = [], timestamp: String,
                        contentType: String = "application/json") throws -> HTTPHeaders {
        let contentHash = Self.contentHash(body, protocolVersion)
        let canonical = canonicalRequest(method: method, path: path, contentHash: contentHash, timestamp: timestamp)
        var h = HTTPHeaders()
        h.add(name: "Accept", value: "application/json")
        h.add(name: "X-Chef-Version", value: chefVersion)
        h.add(name: "X-Ops-Sign", value: protocolVersion.signHeader)
        h.add(name: "X-Ops-Userid", value: userID)
        h.add(name: "X-Ops-Timestamp", value: timestamp)
        h.add(name: "X-Ops-Content-Hash", value: contentHash)
        h.add(name: "X-Ops-Server-API-Version", value: serverAPIVersion)
        for (i, line) in try authorizationLines(canonicalRequest: canonical).enumerated() {
            h.add(name: "X-Ops-Authorization-\(i + 1)", value: line)
        }
        if !body.isEmpty { h.add(name: "Content-Type", value: contentType) }
        return h
    }

    /// The string that gets signed (lines joined by `\n`, no trailing newline).
    public func canonicalRequest(method: String, path: String, body: [UInt8] = [], timestamp: String) -> String {
        canonicalRequest(method: method, path: path, contentHash: Self.contentHash(body, protocolVersion), timestamp: timestamp)
    }

    func canonicalRequest(method: String, path: String, contentHash: String, timestamp: String) -> String {
        let method = method.uppercased()
        let path = Self.canonicalPath(path)
        switch protocolVersion {
        case .v1_0, .v1_1:
            let user = protocolVersion == .v1_1 ? Self.base64(Insecure.SHA1.hash(data: Array(userID.utf8))) : userID
            return [
                "Method:\(method)",
                "Hashed Path:\(Self.base64(Insecure.SHA1.hash(data: Array(path.utf8))))",
                "X-Ops-Content-Hash:\(contentHash)",
                "X-Ops-Timestamp:\(timestamp)",
                "X-Ops-UserId:\(user)",
            ].joined(separator: "\n")
        case .v1_3:
            return [
                "Method:\(method)",
                "Path:\(path)",
                "X-Ops-Content-Hash:\(contentHash)",
                "X-Ops-Sign:version=1.3",
                "X-Ops-Timestamp:\(timestamp)",
                "X-Ops-UserId:\(userID)",
                "X-Ops-Server-API-Version:\(serverAPIVersion)",
            ].joined(separator: "\n")
        }
    }

    /// The base64 signature of `canonicalRequest`, cut into `X-Ops-Authorization-N` lines.
    public func authorizationLines(canonicalRequest: String) throws -> [String] {
        let bytes = Array(canonicalRequest.utf8)
        let signature: [UInt8]
        switch protocolVersion {
        case .v1_0, .v1_1: signature = try key.privateEncrypt(bytes)
        case .v1_3: signature = try key.sha256Signature(bytes)
        }
        let b64 = Array(Data(signature).base64EncodedString().utf8)
        return stride(from: 0, to: b64.count, by: Self.authorizationLineLength).map {
            String(decoding: b64[$0..<min($0 + Self.authorizationLineLength, b64.count)], as: UTF8.self)
        }
    }

    // MARK: - Pieces

    /// `X-Ops-Content-Hash`: base64 SHA-1 of the body (SHA-256 for 1.3).
    public static func contentHash(_ body: [UInt8], _ version: ChefSigningProtocol) -> String {
        switch version {
        case .v1_0, .v1_1: base64(Insecure.SHA1.hash(data: body))
        case .v1_3: base64(SHA256.hash(data: body))
        }
    }

    /// Mixlib's `canonical_path`: drop the query, collapse runs of `/`, drop a trailing `/`
    /// unless the path is just `/`.
    public static func canonicalPath(_ path: String) -> String {
        var p = Substring(path)
        if let q = p.firstIndex(where: { $0 == "?" || $0 == "#" }) { p = p[..<q] }
        var out = ""
        out.reserveCapacity(p.utf8.count)
        var lastWasSlash = false
        for c in p {
            if c == "/" {
                if lastWasSlash { continue }
                lastWasSlash = true
            } else {
                lastWasSlash = false
            }
            out.append(c)
        }
        if out.count > 1, out.hasSuffix("/") { out.removeLast() }
        return out
    }

    /// `X-Ops-Timestamp`: UTC, whole seconds, `YYYY-MM-DDTHH:MM:SSZ` (Ruby `Time#utc.iso8601`).
    public static func timestamp(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = .gmt
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func pad(_ v: Int?, _ width: Int) -> String {
            let s = String(v ?? 0)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(c.year, 4))-\(pad(c.month, 2))-\(pad(c.day, 2))T\(pad(c.hour, 2)):\(pad(c.minute, 2)):\(pad(c.second, 2))Z"
    }

    static func base64<D: Digest>(_ digest: D) -> String {
        Data(digest).base64EncodedString()
    }
}
