import Foundation

/// Why an update run stopped. Matched on ``code``, never on the message.
public struct HostUpdateError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Codable {
        /// The configuration file is missing or wrong.
        case config
        /// The state file cannot be read or written (a corrupt one fails closed: no update).
        case state
        /// Another run holds the lock.
        case busy
        /// The manifest (or an artifact) could not be fetched.
        case download
        /// An http:// URL without `allowInsecureHTTP`, or a scheme that is neither.
        case insecureURL
        /// The manifest is not the signed envelope, or its fields are wrong.
        case malformed
        /// The signature does not verify with the configured key (or was made by another key).
        case badSignature
        /// The manifest is past its `expiresAt` (or issued in the future).
        case expired
        /// The manifest's version is older than one already accepted: a replay.
        case replay
        /// An artifact's size or SHA-256 differs from what the signed manifest says.
        case digestMismatch
        /// Something is larger than its limit.
        case tooLarge
        /// The playbook archive holds a link, special file, absolute path or `..`, or is not a tar.
        case unsafeArchive
        /// `ansible-playbook` is missing or failed, or did not install the manifest's binary.
        case playbook
        /// The restart command failed.
        case restart
        /// Copying or renaming binaries failed.
        case io
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
