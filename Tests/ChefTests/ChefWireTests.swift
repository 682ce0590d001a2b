import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Testing
@testable import Chef

/// Decoding of what goiardi and Chef Infra Server answer (see Fixtures/goiardi-0.11.10-response-shapes.json).
@Suite struct ChefWireTests {
    /// The shapes file keyed by "METHOD /path (detail) -> status".
    static func shape(_ prefix: String) throws -> Data {
        let all = try JSONDecoder().decode([String: ChefJSONValue].self, from: Fixture.data("goiardi-0.11.10-response-shapes.json"))
        let value = try #require(all.first { $0.key.hasPrefix(prefix) }?.value)
        return try JSONEncoder().encode(value)
    }

    @Test func clientKeyFromGoiardiAndAPIv0TopLevel() throws {
        let r = try JSONDecoder().decode(ClientKeyResponse.self, from: Self.shape("POST /clients"))
        let reg = try ChefClient.registration("web01", r, localKey: nil)
        #expect(reg.privateKeyPEM.hasPrefix("-----BEGIN RSA PRIVATE KEY-----"))
        #expect(reg.publicKeyPEM?.hasPrefix("-----BEGIN PUBLIC KEY-----") == true)
        #expect(reg.uri == "http://127.0.0.1:14545/clients/web01")
    }

    /// Chef Infra Server API v1 `POST /clients` with `create_key` (docs: api_chef_server "clients").
    @Test func clientKeyFromAPIv1ChefKey() throws {
        let body = #"{"uri":"https://chef.example.com/organizations/acme/clients/web01","chef_key":{"name":"default","public_key":"-----BEGIN PUBLIC KEY-----\nA\n-----END PUBLIC KEY-----\n","expiration_date":"infinity","private_key":"-----BEGIN RSA PRIVATE KEY-----\nB\n-----END RSA PRIVATE KEY-----\n"}}"#
        let r = try JSONDecoder().decode(ClientKeyResponse.self, from: Data(body.utf8))
        let reg = try ChefClient.registration("web01", r, localKey: nil)
        #expect(reg.privateKeyPEM == "-----BEGIN RSA PRIVATE KEY-----\nB\n-----END RSA PRIVATE KEY-----\n")
        #expect(reg.publicKeyPEM?.contains("\nA\n") == true)
    }

    @Test func responseWithoutAKeyIsInvalid() throws {
        let r = try JSONDecoder().decode(ClientKeyResponse.self, from: Data(#"{"uri":"u","private_key":true}"#.utf8))
        #expect { try ChefClient.registration("web01", r, localKey: nil) } throws: { ($0 as? ChefError)?.code == .invalidResponse }
    }

    @Test func nodeFromGoiardi() throws {
        let node = try JSONDecoder().decode(ChefNode.self, from: Self.shape("PUT /nodes/web01 (as client web01) -> 200"))
        #expect(node == ChefNode(name: "web01", runList: ["recipe[base]", "role[web]"]))
    }

    /// The node JSON knife sends (INTERFACES B.2, from `Chef::Node#for_json`), key order included.
    @Test func nodeEncodesLikeKnife() throws {
        let node = ChefNode(name: "web01", runList: ["recipe[base]", "role[web]"])
        let json = String(decoding: try ChefClient.encode(node), as: UTF8.self)
        #expect(json == #"{"name":"web01","chef_environment":"_default","json_class":"Chef::Node","automatic":{},"normal":{},"chef_type":"node","default":{},"override":{},"run_list":["recipe[base]","role[web]"]}"#)
        let withPolicy = ChefNode(name: "n", policyName: "iot", policyGroup: "prod")
        let json2 = String(decoding: try ChefClient.encode(withPolicy), as: UTF8.self)
        #expect(json2.hasSuffix(#""run_list":[],"policy_name":"iot","policy_group":"prod"}"#))
    }

    @Test func attributesKeepIntegersAndTagsLiveInNormal() throws {
        var node = ChefNode(name: "n", normal: ["port": 8080, "ratio": 0.5, "on": true, "nothing": nil], tags: ["a"])
        #expect(node.tags == ["a"])
        node.tags.append("b")
        let back = try JSONDecoder().decode(ChefNode.self, from: Data(ChefClient.encode(node)))
        #expect(back.normal["port"] == .integer(8080))
        #expect(back.normal["ratio"] == .number(0.5))
        #expect(back.normal["on"] == .bool(true))
        #expect(back.normal["nothing"] == .null)
        #expect(back.tags == ["a", "b"])
    }

    @Test func errorBodiesKeepChefsMessages() throws {
        func raw(_ status: Int, _ body: String) -> ChefClient.RawResponse {
            ChefClient.RawResponse(status: status, headers: [:], body: ByteBuffer(string: body))
        }
        func thrown(_ r: ChefClient.RawResponse) -> ChefError? {
            do { try ChefClient.check(r); return nil } catch { return error as? ChefError }
        }
        let forbidden = try #require(thrown(raw(403, String(decoding: try Self.shape("POST /nodes (as chef-validator) -> 403"), as: UTF8.self))))
        #expect(forbidden.code == .forbidden && forbidden.messages == ["You are not allowed to take this action."])
        let missing = try #require(thrown(raw(404, String(decoding: try Self.shape("PUT /nodes/web01 (node missing) -> 404"), as: UTF8.self))))
        #expect(missing.code == .notFound && missing.message == "node 'web01' not found")
        #expect(thrown(raw(401, #"{"error":"Failed to authenticate"}"#))?.messages == ["Failed to authenticate"])
        #expect(thrown(raw(409, #"{"error":["a","b"]}"#))?.message == "a; b")
        #expect(thrown(raw(502, "<html>bad gateway</html>"))?.code == .server)
        #expect(thrown(raw(406, ""))?.code == .notAcceptable)
        #expect(thrown(raw(200, "")) == nil)
    }

    @Test func urlPathAndNames() throws {
        #expect(ChefClient.path(of: "http://127.0.0.1:4545/file_store/abc") == "/file_store/abc")
        #expect(ChefClient.path(of: "https://s3.example.com/bucket/x?X-Amz-Signature=1") == "/bucket/x?X-Amz-Signature=1")
        #expect(ChefClient.path(of: "http://host") == "/")
        for good in ["web01", "iot-gw_1.example.com", "a:b"] { #expect(throws: Never.self) { try ChefClient.validateName(good, "node") } }
        for bad in ["", "a b", "../x", "a/b", "ü", "a?b"] {
            #expect { try ChefClient.validateName(bad, "node") } throws: { ($0 as? ChefError)?.code == .invalidArgument }
        }
    }

    @Test func serverURLValidationAndOrganization() throws {
        let creds = ChefCredentials(name: "admin", key: try Fixture.testKey())
        let goiardi = try ChefClient(serverURL: "http://127.0.0.1:4545/", credentials: creds, logger: .init(label: "t"))
        #expect(goiardi.baseURL == "http://127.0.0.1:4545")
        let chef = try ChefClient(serverURL: "https://chef.example.com", organization: "acme", credentials: creds, logger: .init(label: "t"))
        #expect(chef.baseURL == "https://chef.example.com/organizations/acme")
        #expect(chef.organizationPath == "/organizations/acme")
        for bad in ["chef.example.com", "http://", "https://x/?q=1", "unix:///x"] {
            #expect { try ChefClient(serverURL: bad, credentials: creds, logger: .init(label: "t")) } throws: {
                ($0 as? ChefError)?.code == .invalidArgument
            }
        }
        #expect { try ChefClient(serverURL: "https://x", organization: "a/b", credentials: creds, logger: .init(label: "t")) } throws: {
            ($0 as? ChefError)?.code == .invalidArgument
        }
    }
}

@Suite struct CookbookManifestTests {
    @Test func recordsFollowChefsManifestV0() {
        func rec(_ path: String) -> (String, String, String) {
            let (segment, r) = CookbookManifest.record(for: ChefCookbookFile(path: path, contents: []))
            return (segment, r.name, r.specificity)
        }
        #expect(rec("metadata.rb") == ("root_files", "metadata.rb", "default"))
        #expect(rec("recipes/default.rb") == ("recipes", "default.rb", "default"))
        #expect(rec("templates/default/a/b.erb") == ("templates", "b.erb", "default"))
        #expect(rec("templates/ubuntu-22.04/x.erb") == ("templates", "x.erb", "ubuntu-22.04"))
        #expect(rec("files/ca.pem") == ("files", "ca.pem", "root_default"))
        #expect(rec("README/x.md") == ("root_files", "x.md", "default"))
    }

    @Test func checksumIsLowercaseHexMD5() {
        #expect(ChefCookbookFile(path: "x", string: "").checksum == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(ChefCookbookFile(path: "x", string: "").contentMD5 == "1B2M2Y8AsgTpgAmY7PhCfg==")
    }

    @Test func manifestHasEverySegmentAndRecipes() throws {
        let json = try CookbookManifest.json(ChefCookbookMetadata(name: "iot", version: "0.1.0", dependencies: ["base": ">= 1.0.0"]),
                                             [ChefCookbookFile(path: "recipes/default.rb", string: "x"),
                                              ChefCookbookFile(path: "recipes/sensor.rb", string: "y")], frozen: false)
        #expect(json.hasPrefix(#"{"name":"iot-0.1.0","cookbook_name":"iot","version":"0.1.0","json_class":"Chef::CookbookVersion","chef_type":"cookbook_version","frozen?":false,"metadata":{"#))
        let parsed = try JSONDecoder().decode([String: ChefJSONValue].self, from: Data(json.utf8))
        for s in ChefCookbookVersion.segmentNames { #expect(parsed[s]?.arrayValue != nil, "\(s)") }
        #expect(parsed["metadata"]?["recipes"] == ["iot": "", "iot::sensor": ""])
        #expect(parsed["metadata"]?["dependencies"] == ["base": ">= 1.0.0"])
    }

    @Test func rejectsBadInputBeforeSending() {
        let ok = ChefCookbookMetadata(name: "iot", version: "1.2.3")
        #expect(throws: Never.self) { try CookbookManifest.validate(ok, [ChefCookbookFile(path: "recipes/default.rb", string: "")]) }
        for (meta, path) in [(ChefCookbookMetadata(name: "i o t", version: "1.0.0"), "a"),
                             (ChefCookbookMetadata(name: "iot", version: "1"), "a"),
                             (ChefCookbookMetadata(name: "iot", version: "1.0.x"), "a"),
                             (ok, "../etc/passwd"), (ok, "/abs"), (ok, "a//b"), (ok, "")] {
            #expect { try CookbookManifest.validate(meta, [ChefCookbookFile(path: path, string: "")]) } throws: {
                ($0 as? ChefError)?.code == .invalidArgument
            }
        }
    }

    @Test func readsADirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cb-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("recipes"), withIntermediateDirectories: true)
        try Data("name 'x'".utf8).write(to: dir.appendingPathComponent("metadata.rb"))
        try Data("log 1".utf8).write(to: dir.appendingPathComponent("recipes/default.rb"))
        try Data("junk".utf8).write(to: dir.appendingPathComponent(".hidden"))
        let files = try ChefCookbookFile.files(inDirectory: dir.path)
        #expect(files.map(\.path) == ["metadata.rb", "recipes/default.rb"])
        #expect(files[1].contents == Array("log 1".utf8))
    }
}

@Suite struct RedactionTests {
    @Test func secretsDoNotAppearInDescriptions() throws {
        let pem = try Fixture.string("test-signing-key.pem")
        let key = try Fixture.testKey()
        let reg = ChefClientRegistration(name: "web01", uri: nil, privateKeyPEM: pem, publicKeyPEM: nil)
        let files = BootstrapFiles(chefServerURL: "http://x", nodeName: "web01", clientKeyPEM: pem, encryptedDataBagSecret: "s3cret")
        let texts = ["\(key)", String(reflecting: key), "\(ChefCredentials(name: "a", key: key))", "\(reg)", String(reflecting: reg),
                     "\(files)", String(reflecting: files)] + files.files.map { "\($0)" }
        for t in texts {
            #expect(!t.contains("PRIVATE KEY") && !t.contains("s3cret"), "\(t)")
        }
    }
}
