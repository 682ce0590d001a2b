import Foundation

// Leniency: reports from InSpec 1.x to 7.x differ in which keys they carry, and InSpec drops
// keys whose value is nil. Descriptive fields (titles, versions, messages) are therefore decoded
// so that a missing key, a `null` or an unexpected type yields nil instead of failing the whole
// report. Only what verdicts depend on (`profiles`, `controls`, control `id`) is strict.
extension KeyedDecodingContainer {
    /// Decodes `key` if present and of type `T`; nil when missing, null or of another type.
    func lenient<T: Decodable>(_ type: T.Type, forKey key: Key) -> T? {
        (try? decodeIfPresent(type, forKey: key)) ?? nil
    }

    /// Decodes an array at `key`, or `[]` when missing, null or not an array of `T`.
    func lenientArray<T: Decodable>(_ type: T.Type, forKey key: Key) -> [T] {
        lenient([T].self, forKey: key) ?? []
    }

    /// Decodes a string at `key`; numbers are accepted and rendered (a `version: 1.0` in YAML
    /// arrives as a number in some reports).
    func lenientString(forKey key: Key) -> String? {
        if let s = lenient(String.self, forKey: key) { return s }
        if let i = lenient(Int.self, forKey: key) { return String(i) }
        if let d = lenient(Double.self, forKey: key) { return String(d) }
        return nil
    }
}

enum ReportDecoding {
    /// Decodes `T` from `data`, mapping Foundation's errors onto `InSpecError`.
    /// `requiredArray` names the top-level key whose absence means "wrong kind of document".
    static func decode<T: Decodable>(
        _ type: T.Type, from data: Data, requiredArray: String, missingCode: InSpecError.Code, reporter: String
    ) throws -> T {
        // Check the outer shape first so the common mistakes get a precise message.
        let top: Any
        do {
            top = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw InSpecError(code: .notJSON, message: "report is not JSON (\(data.count) bytes): \(preview(data))")
        }
        guard let object = top as? [String: Any] else {
            throw InSpecError(code: missingCode, message: "\(reporter) report must be a JSON object with a `\(requiredArray)` array")
        }
        guard object[requiredArray] is [Any] else {
            var hint = ""
            if requiredArray == "profiles", object["controls"] is [Any] {
                hint = " (this looks like json-min output: decode it with InSpecMinReport)"
            } else if requiredArray == "controls", object["profiles"] is [Any] {
                hint = " (this looks like json output: decode it with InSpecReport)"
            }
            let what = object[requiredArray] == nil ? "has no" : "has a non-array"
            throw InSpecError(code: missingCode, message: "\(reporter) report \(what) `\(requiredArray)`\(hint)")
        }
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let error as DecodingError {
            throw InSpecError(code: .invalidReport, message: "\(reporter) report: \(describe(error))")
        }
    }

    static func preview(_ data: Data) -> String {
        if data.isEmpty { return "empty" }
        let text = String(decoding: data.prefix(80), as: UTF8.self)
        return "starts with \(text.debugDescription)"
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            let p = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return p.isEmpty ? "top level" : String(p.drop(while: { $0 == "." }))
        }
        switch error {
        case .keyNotFound(let key, let ctx):
            return "missing `\(key.stringValue)` at \(path(ctx.codingPath))"
        case .typeMismatch(let type, let ctx):
            return "expected \(type) at \(path(ctx.codingPath))"
        case .valueNotFound(let type, let ctx):
            return "null where \(type) is required at \(path(ctx.codingPath))"
        case .dataCorrupted(let ctx):
            return "\(ctx.debugDescription) at \(path(ctx.codingPath))"
        @unknown default:
            return "\(error)"
        }
    }
}
