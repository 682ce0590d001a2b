// Crypto comes in through GatewayProtocol; only key generation needs it here.
import Crypto
import Foundation
import GatewayProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The vendor's plan-signing key on disk: base64 of the raw 32-byte Ed25519 private key, mode 0600.
public enum SigningKeyFile {
    /// Reads the key; a missing file throws ``SigningKeyError/Code/missing``.
    public static func load(path: String) throws -> PlanSigner {
        guard FileManager.default.fileExists(atPath: path) else {
            throw SigningKeyError(.missing, "signing key \(path) does not exist; run `iot-daemon init` first")
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw SigningKeyError(.unreadable, "cannot read signing key \(path)")
        }
        do { return PlanSigner(privateKey: try Keys.decodePrivate(text)) } catch {
            throw SigningKeyError(.invalid, "signing key \(path) is not base64 of a 32-byte Ed25519 private key")
        }
    }

    /// Reads the key, or creates it when the file does not exist (folder created 0700 if missing, file
    /// created 0600 in one step so it is never readable by others).
    public static func loadOrCreate(path: String) throws -> (signer: PlanSigner, created: Bool) {
        if FileManager.default.fileExists(atPath: path) { return (try load(path: path), false) }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw SigningKeyError(.cannotCreate, "cannot create folder \(folder.path) for the signing key")
        }
        let key = Curve25519.Signing.PrivateKey()
        let bytes = Array((key.rawRepresentation.base64EncodedString() + "\n").utf8)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw SigningKeyError(.cannotCreate, "cannot create signing key \(path): errno \(errno)") }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count, fsync(fd) == 0 else {
            unlink(path)
            throw SigningKeyError(.cannotCreate, "cannot write signing key \(path): errno \(errno)")
        }
        return (PlanSigner(privateKey: key), true)
    }

    /// Whether group or others may read the file (the daemon warns; the key signs every plan).
    public static func isReadableByOthers(path: String) -> Bool {
        guard let mode = (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? NSNumber else { return false }
        return mode.intValue & 0o077 != 0
    }
}

/// Why the signing key could not be loaded or created. Matchable by `code`; never contains key material.
public struct SigningKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        public init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        public static let missing = Code("missing")
        public static let unreadable = Code("unreadable")
        public static let invalid = Code("invalid")
        public static let cannotCreate = Code("cannotCreate")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
