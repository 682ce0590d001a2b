/// LXD's name rules, checked before any request is sent.
public enum LXDName {
    /// Instance, snapshot and profile names follow `shared/validate.IsHostname` (LXD 5.0.2):
    /// 1-63 characters of `[-a-zA-Z0-9]`, not starting with a digit or `-`, not ending with `-`.
    public static func validateInstance(_ name: String) throws {
        func fail(_ why: String) -> LXDError {
            LXDError(code: .invalidName, message: "invalid instance name \"\(name)\": \(why)")
        }
        guard !name.isEmpty, name.utf8.count <= 63 else { throw fail("must be 1 to 63 characters") }
        guard name.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") }) else {
            throw fail("only ASCII letters, digits and '-' are allowed")
        }
        let first = name.utf8.first!  // non-empty: checked above
        guard !isDigit(first), first != UInt8(ascii: "-") else { throw fail("must not start with a digit or '-'") }
        guard name.utf8.last != UInt8(ascii: "-") else { throw fail("must not end with '-'") }
    }

    /// Snapshot names: no `/`, not empty, at most 63 characters (what LXD accepts in 5.0).
    public static func validateSnapshot(_ name: String) throws {
        guard !name.isEmpty, name.utf8.count <= 63, !name.contains("/"), name != ".", name != ".." else {
            throw LXDError(code: .invalidName, message: "invalid snapshot name \"\(name)\"")
        }
    }

    /// Profile and alias names: not empty, no `/`, no whitespace.
    public static func validateObject(_ name: String, kind: String) throws {
        guard !name.isEmpty, !name.contains("/"), !name.contains(where: { $0.isWhitespace }) else {
            throw LXDError(code: .invalidName, message: "invalid \(kind) name \"\(name)\"")
        }
    }

    static func isDigit(_ c: UInt8) -> Bool { c >= 48 && c <= 57 }
    static func isAlnum(_ c: UInt8) -> Bool { isDigit(c) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
}
