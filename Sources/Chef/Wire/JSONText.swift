import Foundation

/// Compact, deterministic JSON text like Ruby's `to_json`: slashes unescaped, nested object keys
/// sorted, and top-level objects in the order the caller gives (Foundation's encoder does not
/// keep declaration order on Linux).
enum JSONText {
    static func encode<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            return String(decoding: try encoder.encode(value), as: UTF8.self)
        } catch {
            throw ChefError(code: .invalidArgument, message: "cannot encode \(T.self) as JSON: \(error)")
        }
    }

    /// `{"k1":v1,"k2":v2}` from already encoded values.
    static func object(_ members: [(String, String)]) -> String {
        "{" + members.map { "\(jsonString($0.0)):\($0.1)" }.joined(separator: ",") + "}"
    }

    static func jsonString(_ s: String) -> String {
        (try? encode(s)) ?? "\"\""
    }
}
