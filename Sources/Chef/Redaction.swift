// Values that carry private keys describe themselves without them, so string interpolation in
// a log line or a test failure never prints a secret.

extension ChefPrivateKey: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "ChefPrivateKey(\(keySizeInBits)-bit RSA, redacted)" }
    public var debugDescription: String { description }
}

extension ChefCredentials: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "ChefCredentials(name: \(name), key: \(key))" }
    public var debugDescription: String { description }
}

extension ChefClientRegistration: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String {
        "ChefClientRegistration(name: \(name), uri: \(uri ?? "nil"), privateKeyPEM: <redacted>)"
    }
    public var debugDescription: String { description }
}

extension BootstrapFiles: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String {
        "BootstrapFiles(chefServerURL: \(chefServerURL), nodeName: \(nodeName ?? "nil"), runList: \(runList), "
            + "clientKeyPEM: \(clientKeyPEM == nil ? "nil" : "<redacted>"), "
            + "encryptedDataBagSecret: \(encryptedDataBagSecret == nil ? "nil" : "<redacted>"))"
    }
    public var debugDescription: String { description }
}

extension BootstrapFiles.File: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String {
        let secret = mode == BootstrapFiles.clientKeyMode
        return "BootstrapFiles.File(path: \(path), mode: 0o\(String(mode, radix: 8)), contents: \(secret ? "<redacted>" : "\(contents.utf8.count) bytes"))"
    }
    public var debugDescription: String { description }
}
