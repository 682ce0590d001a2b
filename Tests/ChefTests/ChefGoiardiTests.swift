import Foundation
import Testing
@testable import Chef

/// Against the real goiardi 0.11.10 (`scripts/start-goiardi`), asserting on the server's state.
@Suite struct ChefGoiardiTests {
    /// knife bootstrap's validatorless registration, end to end: admin creates the client and
    /// gets its key; the node is saved signed AS the new client (which a container would do with
    /// /etc/chef/client.pem); read back and updated as that client; then cleaned up.
    @Test func validatorlessRegistrationLikeKnife() async throws {
        let admin = try await TestGoiardi.admin()
        let name = TestGoiardi.uniqueName("boot")
        try await TestGoiardi.cleaningUp(node: name, client: name) {
            let registration = try await admin.registerClient(named: name)
            #expect(registration.name == name)
            #expect(registration.privateKeyPEM.hasPrefix("-----BEGIN RSA PRIVATE KEY-----"))
            #expect(registration.uri?.hasSuffix("/clients/\(name)") == true)

            let stored = try await admin.client(named: name)
            #expect(stored.name == name)
            #expect(!stored.admin && !stored.validator)

            let asNode = admin.signing(as: try ChefCredentials(name: name, pemRepresentation: registration.privateKeyPEM))
            try await asNode.saveNode(ChefNode(name: name, runList: ["recipe[base]", "role[web]"],
                                               normal: ["myapp": ["port": 8080]], tags: ["gateway-managed"]))

            let read = try await asNode.node(named: name)
            #expect(read.runList == ["recipe[base]", "role[web]"])
            #expect(read.chefEnvironment == "_default")
            #expect(read.normal["myapp"]?["port"] == .integer(8080))
            #expect(read.tags == ["gateway-managed"])

            let updated = try await asNode.setRunList(["recipe[base]", "recipe[iot::sensor]"], ofNode: name)
            #expect(updated.runList == ["recipe[base]", "recipe[iot::sensor]"])
            // The update kept everything else (it is a full PUT of what was read).
            #expect(updated.tags == ["gateway-managed"])
            let reread = try await admin.node(named: name)
            #expect(reread.runList == ["recipe[base]", "recipe[iot::sensor]"])
            #expect(reread.normal["myapp"]?["port"] == .integer(8080))

            try await asNode.deleteNode(named: name)
            #expect(try await admin.nodeExists(named: name) == false)
            try await admin.deleteClient(named: name)
            #expect(try await admin.clientExists(named: name) == false)
        }
    }

    @Test(arguments: ChefSigningProtocol.allCases)
    func everySigningVersionIsAccepted(_ proto: ChefSigningProtocol) async throws {
        let admin = try await TestGoiardi.admin(proto)
        let name = TestGoiardi.uniqueName("sig\(proto.rawValue.replacingOccurrences(of: ".", with: ""))")
        try await TestGoiardi.cleaningUp(node: name, client: name) {
            // GET without a body, POST and PUT with one, DELETE: each signed with `proto`.
            let reg = try await admin.createClient(named: name)
            try await admin.createNode(ChefNode(name: name, runList: ["recipe[a]"]))
            try await admin.setRunList(["recipe[b]"], ofNode: name)
            #expect(try await admin.node(named: name).runList == ["recipe[b]"])
            // And as a freshly created client.
            var asNode = admin.signing(as: try ChefCredentials(name: name, pemRepresentation: reg.privateKeyPEM))
            asNode.signingProtocol = proto
            #expect(try await asNode.node(named: name).name == name)
            try await admin.deleteNode(named: name)
        }
    }

    /// goiardi's own words: 1.0/1.1 compare the decrypted canonical request, 1.3 verifies an RSA signature.
    @Test(arguments: [(ChefSigningProtocol.v1_0, "failed to verify authorization"),
                      (.v1_1, "failed to verify authorization"),
                      (.v1_3, "crypto/rsa: verification error")])
    func wrongKeyIsUnauthorizedWithGoiardisMessage(_ proto: ChefSigningProtocol, _ said: String) async throws {
        let admin = try await TestGoiardi.admin(proto)
        let impostor = admin.signing(as: ChefCredentials(name: "admin", key: try Fixture.testKey()))
        await #expect { try await impostor.nodeNames() } throws: {
            guard let e = $0 as? ChefError else { return false }
            return e.code == .unauthorized && e.status == 401 && e.messages == [said]
        }
    }

    @Test func unknownUserIsUnauthorized() async throws {
        let admin = try await TestGoiardi.admin()
        let nobody = admin.signing(as: ChefCredentials(name: TestGoiardi.uniqueName("nobody"), key: try Fixture.testKey()))
        await #expect { try await nobody.nodeNames() } throws: {
            guard let e = $0 as? ChefError else { return false }
            return e.code == .unauthorized && e.message.contains("Failed to authenticate")
        }
    }

    @Test func clockSkewBeyondTheSlewIsUnauthorized() async throws {
        var admin = try await TestGoiardi.admin()
        admin.now = { Date().addingTimeInterval(-3600) }
        await #expect { try await admin.nodeNames() } throws: { ($0 as? ChefError)?.code == .unauthorized }
    }

    @Test func missingNodeIsNotFound() async throws {
        let admin = try await TestGoiardi.admin()
        let name = TestGoiardi.uniqueName("absent")
        await #expect { try await admin.node(named: name) } throws: {
            guard let e = $0 as? ChefError else { return false }
            return e.code == .notFound && e.status == 404 && e.message.contains(name)
        }
        await #expect { try await admin.setRunList(["recipe[x]"], ofNode: name) } throws: { ($0 as? ChefError)?.code == .notFound }
        await #expect { try await admin.deleteNode(named: name) } throws: { ($0 as? ChefError)?.code == .notFound }
        await #expect { try await admin.client(named: name) } throws: { ($0 as? ChefError)?.code == .notFound }
        #expect(try await admin.nodeExists(named: name) == false)
    }

    @Test func existingClientIsAConflictAndRegisterRegeneratesTheKey() async throws {
        let admin = try await TestGoiardi.admin()
        let name = TestGoiardi.uniqueName("dup")
        try await TestGoiardi.cleaningUp(client: name) {
            let first = try await admin.createClient(named: name)
            await #expect { try await admin.createClient(named: name) } throws: {
                guard let e = $0 as? ChefError else { return false }
                return e.code == .conflict && e.status == 409 && !e.message.isEmpty
            }
            let second = try await admin.registerClient(named: name)
            #expect(second.privateKeyPEM != first.privateKeyPEM)
            // The new key authenticates, the old one no longer does.
            let asNew = admin.signing(as: try ChefCredentials(name: name, pemRepresentation: second.privateKeyPEM))
            _ = try await asNew.client(named: name)
            let asOld = admin.signing(as: try ChefCredentials(name: name, pemRepresentation: first.privateKeyPEM))
            await #expect { try await asOld.client(named: name) } throws: { ($0 as? ChefError)?.code == .unauthorized }
        }
    }

    @Test func localKeyGenerationRegistersOnlyThePublicKey() async throws {
        let admin = try await TestGoiardi.admin()
        let name = TestGoiardi.uniqueName("local")
        try await TestGoiardi.cleaningUp(node: name, client: name) {
            let key = try ChefPrivateKey.generate()
            let reg = try await admin.createClient(named: name, localKey: key)
            #expect(reg.privateKeyPEM == key.pemRepresentation)
            let asNode = admin.signing(as: ChefCredentials(name: name, key: key))
            try await asNode.saveNode(ChefNode(name: name, runList: ["recipe[base]"]))
            #expect(try await asNode.node(named: name).runList == ["recipe[base]"])
        }
    }

    @Test func aClientCannotChangeAnotherClientsNode() async throws {
        let admin = try await TestGoiardi.admin()
        let a = TestGoiardi.uniqueName("own-a")
        let b = TestGoiardi.uniqueName("own-b")
        try await TestGoiardi.cleaningUp(node: a, client: a) {
            try await TestGoiardi.cleaningUp(client: b) {
                let regA = try await admin.createClient(named: a)
                let regB = try await admin.createClient(named: b)
                let asA = admin.signing(as: try ChefCredentials(name: a, pemRepresentation: regA.privateKeyPEM))
                let asB = admin.signing(as: try ChefCredentials(name: b, pemRepresentation: regB.privateKeyPEM))
                try await asA.createNode(ChefNode(name: a, runList: ["recipe[a]"]))
                await #expect { try await asB.setRunList(["recipe[evil]"], ofNode: a) } throws: {
                    guard let e = $0 as? ChefError else { return false }
                    return e.code == .forbidden && e.status == 403 && !e.message.isEmpty
                }
                #expect(try await admin.node(named: a).runList == ["recipe[a]"])
            }
        }
    }

    @Test func organizationPrefixOnGoiardiIsAnInvalidResponseNotSilentSuccess() async throws {
        let admin = try await TestGoiardi.admin()
        let withOrg = try ChefClient(serverURL: TestGoiardi.url, organization: "acme", credentials: admin.credentials,
                                     logger: TestGoiardi.logger)
        #expect(withOrg.baseURL == "http://127.0.0.1:4545/organizations/acme")
        await #expect { try await withOrg.node(named: "web01") } throws: {
            guard let e = $0 as? ChefError else { return false }
            return e.code == .invalidResponse && e.message.contains("organization 'acme'")
        }
    }

    @Test func unreachableServerIsUnreachable() async throws {
        var chef = try ChefClient(serverURL: "http://127.0.0.1:1", credentials: ChefCredentials(name: "x", key: try Fixture.testKey()),
                                  logger: TestGoiardi.logger)
        chef.requestTimeout = .seconds(2)
        await #expect { try await chef.nodeNames() } throws: { ($0 as? ChefError)?.code == .unreachable }
    }
}

/// Cookbook upload against the real goiardi, like `knife cookbook upload`.
@Suite struct ChefCookbookGoiardiTests {
    static func cookbook(_ name: String) -> [ChefCookbookFile] {
        [
            ChefCookbookFile(path: "metadata.rb", string: "name '\(name)'\nversion '0.1.0'\n"),
            ChefCookbookFile(path: "recipes/default.rb", string: "log 'hello from \(name)'\n"),
            ChefCookbookFile(path: "recipes/sensor.rb", string: "package 'mosquitto-clients'\n"),
            ChefCookbookFile(path: "attributes/default.rb", string: "default['\(name)']['port'] = 1883\n"),
            ChefCookbookFile(path: "templates/default/sensor.conf.erb", string: "port <%= @port %>\n"),
            ChefCookbookFile(path: "files/ca.pem", string: "not really a cert\n"),
        ]
    }

    @Test func uploadReadDownloadAndDelete() async throws {
        let admin = try await TestGoiardi.admin()
        let name = TestGoiardi.uniqueName("cb").replacingOccurrences(of: "t-", with: "t_")
        let files = Self.cookbook(name)
        let meta = ChefCookbookMetadata(name: name, version: "0.1.0", description: "test", dependencies: [:])
        do {
            let first = try await admin.uploadCookbook(meta, files: files)
            #expect(first.uploaded.count == files.count)
            #expect(first.alreadyPresent.isEmpty)

            let stored = try await admin.cookbookVersion(name, version: "0.1.0")
            #expect(stored.cookbookName == name && stored.version == "0.1.0" && !stored.frozen)
            #expect(stored.files.map(\.path) == files.map(\.path).sorted())
            let template = try #require(stored.segments["templates"]?.first)
            #expect(template.name == "sensor.conf.erb" && template.specificity == "default")
            #expect(stored.segments["files"]?.first?.specificity == "root_default")
            #expect(stored.segments["root_files"]?.first?.name == "metadata.rb")
            #expect(stored.metadata["recipes"]?[name] == "")
            #expect(stored.metadata["recipes"]?["\(name)::sensor"] == "")

            let recipe = try #require(stored.segments["recipes"]?.first { $0.name == "default.rb" })
            #expect(try await admin.cookbookFileContents(recipe) == files[1].contents)

            // Same content again: nothing to upload, the version is replaced (not frozen).
            let second = try await admin.uploadCookbook(meta, files: files)
            #expect(second.uploaded.isEmpty)
            #expect(second.alreadyPresent.count == files.count)

            try await admin.deleteCookbook(name, version: "0.1.0")
            await #expect { try await admin.cookbookVersion(name, version: "0.1.0") } throws: { ($0 as? ChefError)?.code == .notFound }
        } catch {
            try? await admin.deleteCookbook(name, version: "0.1.0")
            throw error
        }
    }

    @Test func frozenVersionCannotBeReplaced() async throws {
        let admin = try await TestGoiardi.admin()
        let name = TestGoiardi.uniqueName("frz").replacingOccurrences(of: "t-", with: "t_")
        let meta = ChefCookbookMetadata(name: name, version: "1.0.0")
        let files = [ChefCookbookFile(path: "recipes/default.rb", string: "log 'v1'\n")]
        do {
            try await admin.uploadCookbook(meta, files: files, freeze: true)
            #expect(try await admin.cookbookVersion(name, version: "1.0.0").frozen)
            await #expect { try await admin.uploadCookbook(meta, files: [ChefCookbookFile(path: "recipes/default.rb", string: "log 'v2'\n")]) } throws: {
                guard let e = $0 as? ChefError else { return false }
                return e.code == .conflict && e.message.contains("frozen")
            }
            try await admin.deleteCookbook(name, version: "1.0.0")
        } catch {
            try? await admin.deleteCookbook(name, version: "1.0.0")
            throw error
        }
    }
}
