import NIOHTTP1

/// `/clients`: node identities. Creating clients needs an admin (or, on Chef Infra Server, the
/// validator); knife's validatorless bootstrap creates the client with the user's own credentials.
extension ChefClient {
    /// `POST /clients`: creates a non-validator client.
    ///
    /// - Parameters:
    ///   - localKey: register this key's public half instead of letting the server generate a
    ///     key pair (`local_key_generation`); the private key never crosses the network.
    /// - Returns: the new client's private key (server-generated: top-level `private_key` in API
    ///   v0 and goiardi, `chef_key.private_key` in API v1+; or `localKey`).
    /// - Throws: `ChefError` `.conflict` if the client exists.
    public func createClient(named name: String, admin: Bool = false, localKey: ChefPrivateKey? = nil) async throws -> ChefClientRegistration {
        try Self.validateName(name, "client")
        let body = ClientsPost(name: name, admin: admin, publicKey: localKey?.publicKeyPEM,
                               createKey: localKey == nil && serverAPIVersion != "0" ? true : nil)
        let response = try await call(.POST, "clients", body: Self.encode(body), as: ClientKeyResponse.self)
        return try Self.registration(name, response, localKey: localKey)
    }

    /// `PUT /clients/NAME` asking for a new key, as `Chef::ApiClient::Registration#update` does
    /// when the client already exists. Sent with API version 0: Chef Infra Server only rotates
    /// keys through this call in v0 (v1+ uses `/clients/NAME/keys`).
    public func regenerateClientKey(named name: String, admin: Bool = false, localKey: ChefPrivateKey? = nil) async throws -> ChefClientRegistration {
        try Self.validateName(name, "client")
        let body = ClientPut(name: name, admin: admin, privateKey: localKey == nil ? true : nil, publicKey: localKey?.publicKeyPEM)
        let response = try await call(.PUT, "clients/\(name)", body: Self.encode(body), apiVersion: "0", as: ClientKeyResponse.self)
        return try Self.registration(name, response, localKey: localKey)
    }

    /// knife's registration: create the client; if it exists (409), give it a new key.
    public func registerClient(named name: String, localKey: ChefPrivateKey? = nil) async throws -> ChefClientRegistration {
        do {
            return try await createClient(named: name, localKey: localKey)
        } catch let e as ChefError where e.code == .conflict {
            logger.info("chef client exists, regenerating its key", metadata: ["chef.client": "\(name)"])
            return try await regenerateClientKey(named: name, localKey: localKey)
        }
    }

    /// `GET /clients/NAME`.
    public func client(named name: String) async throws -> ChefAPIClient {
        try Self.validateName(name, "client")
        return try await call(.GET, "clients/\(name)", as: ChefAPIClient.self)
    }

    /// `GET /clients/NAME`, `false` on 404.
    public func clientExists(named name: String) async throws -> Bool {
        do {
            _ = try await client(named: name)
            return true
        } catch let e as ChefError where e.code == .notFound {
            return false
        }
    }

    /// `DELETE /clients/NAME`. Throws `.notFound` if it does not exist.
    public func deleteClient(named name: String) async throws {
        try Self.validateName(name, "client")
        try await call(.DELETE, "clients/\(name)")
    }

    static func registration(_ name: String, _ response: ClientKeyResponse, localKey: ChefPrivateKey?) throws -> ChefClientRegistration {
        if let localKey {
            return ChefClientRegistration(name: name, uri: response.uri, privateKeyPEM: localKey.pemRepresentation,
                                          publicKeyPEM: localKey.publicKeyPEM)
        }
        guard let privateKey = response.effectivePrivateKey, !privateKey.isEmpty else {
            throw ChefError(code: .invalidResponse, message: "the server returned no private key for client '\(name)'")
        }
        return ChefClientRegistration(name: name, uri: response.uri, privateKeyPEM: privateKey,
                                      publicKeyPEM: response.effectivePublicKey)
    }
}
