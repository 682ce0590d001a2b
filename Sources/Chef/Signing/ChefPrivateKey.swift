import Crypto
import Foundation
import _CryptoExtras

/// An RSA private key of a Chef user or client (`admin.pem`, `client.pem`), able to produce the
/// two kinds of signature Chef's request authentication uses.
///
/// Accepts PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`, what Chef servers and goiardi hand out)
/// and PKCS#8 (`-----BEGIN PRIVATE KEY-----`) PEM. Keys of 1024 bits or more are accepted, since
/// the server, not this client, chose the key; Chef servers generate 2048-bit keys.
public struct ChefPrivateKey: Sendable {
    /// Raw RSA (`m^d mod n`), used to implement `RSA_private_encrypt` for protocols 1.0/1.1.
    ///
    /// This is BoringSSL's `RSA_sign_raw` (constant time, blinded, the result verified against
    /// the public key before it is returned) reached through the blind-signature API, which is
    /// the only public raw private-key operation in swift-crypto. The blind-signing parameters
    /// are irrelevant here: `blindSignature(for:)` applies no padding and no hashing.
    private let raw: _RSA.BlindSigning.PrivateKey<SHA384>
    /// RSASSA-PKCS1-v1_5 signatures for protocol 1.3.
    private let signing: _RSA.Signing.PrivateKey

    /// Loads a PEM private key.
    /// - Throws: `ChefError` with code `.invalidKey`.
    public init(pemRepresentation pem: String) throws {
        do {
            self.raw = try _RSA.BlindSigning.PrivateKey(unsafePEMRepresentation: pem, parameters: .RSABSSA_SHA384_PSS_Deterministic)
            self.signing = try _RSA.Signing.PrivateKey(unsafePEMRepresentation: pem)
        } catch {
            throw ChefError(code: .invalidKey, message: "cannot load RSA private key from PEM: \(error)")
        }
    }

    /// Generates a new 2048-bit key (for registering a client with a locally generated key, so the
    /// private key never crosses the network).
    public static func generate() throws -> ChefPrivateKey {
        do {
            return try ChefPrivateKey(pemRepresentation: _RSA.Signing.PrivateKey(keySize: .bits2048).pemRepresentation)
        } catch let e as ChefError {
            throw e
        } catch {
            throw ChefError(code: .invalidKey, message: "cannot generate an RSA key: \(error)")
        }
    }

    /// The key as PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`), the format of `client.pem`.
    public var pemRepresentation: String { signing.pemRepresentation }

    /// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), the format Chef servers store.
    public var publicKeyPEM: String { signing.publicKey.pemRepresentation }

    /// Modulus size in bits.
    public var keySizeInBits: Int { signing.keySizeInBits }

    /// OpenSSL `RSA_private_encrypt(RSA_PKCS1_PADDING)`: EMSA-PKCS1-v1_5 type-1 padding of
    /// `message` itself (no hashing, no DigestInfo), then the raw private-key operation.
    /// This is what Mixlib::Authentication 1.0/1.1 calls `private_encrypt`.
    func privateEncrypt(_ message: [UInt8]) throws -> [UInt8] {
        let k = raw.keySizeInBits / 8
        // RFC 8017 §9.2 step 3: at least 8 bytes of 0xFF padding.
        guard message.count <= k - 11 else {
            throw ChefError(code: .signingFailed,
                            message: "canonical request is \(message.count) bytes, a \(k * 8)-bit key signs at most \(k - 11)")
        }
        var block = [UInt8](repeating: 0xFF, count: k)
        block[0] = 0x00
        block[1] = 0x01
        block[k - message.count - 1] = 0x00
        block.replaceSubrange((k - message.count)..<k, with: message)
        do {
            return Array(try raw.blindSignature(for: block).rawRepresentation)
        } catch {
            throw ChefError(code: .signingFailed, message: "RSA private-key operation failed: \(error)")
        }
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (Ruby `rsa_key.sign(SHA256.new, message)`).
    func sha256Signature(_ message: [UInt8]) throws -> [UInt8] {
        do {
            return Array(try signing.signature(for: SHA256.hash(data: message), padding: .insecurePKCS1v1_5).rawRepresentation)
        } catch {
            throw ChefError(code: .signingFailed, message: "RSA-SHA256 signing failed: \(error)")
        }
    }
}
