import Foundation
import Testing
@testable import Chef

enum Fixture {
    static func url(_ name: String) throws -> URL {
        guard let url = Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures") else {
            throw ChefError(code: .invalidArgument, message: "missing fixture \(name)")
        }
        return url
    }

    static func data(_ name: String) throws -> Data { try Data(contentsOf: url(name)) }
    static func string(_ name: String) throws -> String { String(decoding: try data(name), as: UTF8.self) }

    /// The throwaway key the signing vectors were made with.
    static func testKey() throws -> ChefPrivateKey {
        try ChefPrivateKey(pemRepresentation: string("test-signing-key.pem"))
    }
}

/// One case of `Fixtures/signing-test-vectors.json` (generated with Ruby Mixlib::Authentication,
/// checked live against goiardi).
struct SigningVector: Decodable, Sendable, CustomTestStringConvertible {
    var proto: String
    var userID: String
    var method: String
    var path: String
    var body: String
    var timestamp: String
    var serverAPIVersion: String
    var canonicalRequest: String
    var headers: [String: String]

    enum CodingKeys: String, CodingKey {
        case proto, method, path, body, timestamp, headers
        case userID = "user_id"
        case serverAPIVersion = "server_api_version"
        case canonicalRequest = "canonical_request"
    }

    var testDescription: String { "\(proto) \(method) \(path)" }

    static func all() throws -> [SigningVector] {
        struct File: Decodable { var cases: [SigningVector] }
        return try JSONDecoder().decode(File.self, from: Fixture.data("signing-test-vectors.json")).cases
    }
}
