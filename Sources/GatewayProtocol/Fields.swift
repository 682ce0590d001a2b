import Foundation

/// The one definition of what a valid field is, for every string that crosses the trust boundary
/// between a gateway and a vendor: in a plan, a bootstrap bundle, a report, a request. Every rule
/// is an allow-list (character set and length); nothing is "cleaned up" into validity, it is refused.
///
/// Vendors are adversaries: a string that passes here can still be anything the rule allows, but it
/// can no longer carry control characters, escape sequences, path traversal, option injection
/// (a leading `-`) or unbounded length into the owner's terminal, LXD's configuration or a command line.
public struct FieldRule: Sendable {
    /// What the field is, for messages (e.g. "app name").
    public var what: String
    public var maxLength: Int
    /// Checks the whole value (length is checked first).
    let accepts: @Sendable (Substring.UTF8View) -> Bool
    /// A human description of the allowed form, for messages.
    public var form: String

    public init(_ what: String, maxLength: Int, form: String, accepts: @escaping @Sendable (Substring.UTF8View) -> Bool) {
        self.what = what
        self.maxLength = maxLength
        self.form = form
        self.accepts = accepts
    }

    /// Whether `value` is valid.
    public func isValid(_ value: String) -> Bool {
        let u = Substring(value).utf8
        return !u.isEmpty && u.count <= maxLength && accepts(u)
    }

    /// Throws ``ProtocolError/Code/invalidField`` naming the field (`at`) and quoting the value safely.
    public func check(_ value: String, at path: String) throws {
        guard isValid(value) else {
            throw ProtocolError(.invalidField, "\(path): \(what) \(Fields.quote(value)) must be \(form)")
        }
    }

    /// The same rule with another name in messages.
    public func named(_ what: String) -> FieldRule {
        var r = self
        r.what = what
        return r
    }
}

/// The field rules, and helpers to show untrusted text safely.
public enum Fields {
    // MARK: Character classes (ASCII bytes only: every rule here is ASCII)

    static func isAlnum(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) }
    static func isLowerAlnum(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x7a) }
    static func isHex(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) }
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    static func isAlpha(_ b: UInt8) -> Bool { (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) }
    static func isUpperAlnum(_ b: UInt8) -> Bool { (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) }
    static func inSet(_ b: UInt8, _ s: String) -> Bool { s.utf8.contains(b) }

    /// `[A-Za-z0-9]` then `[A-Za-z0-9<extra>]*`: never empty, never starts with `.` or `-`.
    static func word(_ u: Substring.UTF8View, extra: String) -> Bool {
        guard let f = u.first, isAlnum(f) else { return false }
        return u.allSatisfy { isAlnum($0) || inSet($0, extra) }
    }

    // MARK: Identifiers

    /// A vendor id: `[a-z][a-z0-9-]{0,30}`, not ending in `-`. Also names the container `iotgw-<id>`.
    public static let vendorID = FieldRule("vendor id", maxLength: 31, form: "[a-z][a-z0-9-]{0,30} not ending in -") { u in
        guard let f = u.first, f >= 0x61 && f <= 0x7a, u.last != UInt8(ascii: "-") else { return false }
        return u.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") }
    }

    /// A gateway id: `gw-` and 16 lowercase hex digits (derived from its key).
    public static let gatewayID = FieldRule("gateway id", maxLength: 19, form: "gw- and 16 lowercase hex digits") { u in
        u.count == 19 && u.starts(with: "gw-".utf8) && u.dropFirst(3).allSatisfy(isHex)
    }

    /// A USB vendor or product ID: 4 lowercase hex digits.
    public static let usbID = FieldRule("USB ID", maxLength: 4, form: "4 lowercase hex digits") { u in u.count == 4 && u.allSatisfy(isHex) }

    /// A USB serial number as vendors' registries know it: 1-64 of `[A-Za-z0-9._:+-]`, starting alphanumeric.
    public static let serial = FieldRule("serial", maxLength: 64, form: "1-64 of [A-Za-z0-9._:+-] starting with a letter or digit") { u in
        word(u, extra: "._:+-")
    }

    /// App, profile, image alias and environment names: 1-64 of `[A-Za-z0-9._-]`, starting alphanumeric
    /// (so never `.`, `..` or an option like `-x`).
    public static let name = FieldRule("name", maxLength: 64, form: "1-64 of [A-Za-z0-9._-] starting with a letter or digit") { u in
        word(u, extra: "._-")
    }

    /// An app version: 1-64 of `[A-Za-z0-9.+~_-]`, starting alphanumeric.
    public static let version = FieldRule("version", maxLength: 64, form: "1-64 of [A-Za-z0-9.+~_-] starting with a letter or digit") { u in
        word(u, extra: ".+~_-")
    }

    /// A SHA-256 in hex: 64 lowercase hex digits.
    public static let sha256 = FieldRule("SHA-256", maxLength: 64, form: "64 lowercase hex digits") { u in u.count == 64 && u.allSatisfy(isHex) }

    /// One run-list item: `recipe[cookbook]`, `recipe[cookbook::recipe]`, optionally `@1.2.3`; or `role[name]`.
    public static let runListItem = FieldRule("run-list item", maxLength: 200,
                                              form: "recipe[cookbook(::recipe)(@x.y.z)] or role[name]") { u in
        var c = ASCIIScanner(u)
        if c.take("role[") { return c.chefName() && c.take("]") && c.atEnd }
        guard c.take("recipe["), c.chefName() else { return false }
        if c.take("::") { guard c.chefName() else { return false } }
        if c.take("@") {
            guard c.run(1...9, isDigit) else { return false }
            for _ in 0..<2 where c.take(".") { guard c.run(1...9, isDigit) else { return false } }
        }
        return c.take("]") && c.atEnd
    }

    /// A node name on the vendor's Chef server: 1-128 of `[A-Za-z0-9._-]`, starting alphanumeric.
    public static let nodeName = FieldRule("node name", maxLength: 128, form: "1-128 of [A-Za-z0-9._-] starting with a letter or digit") { u in
        word(u, extra: "._-")
    }

    /// An Ansible variable name: `[A-Za-z_][A-Za-z0-9_]{0,63}`.
    public static let variableName = FieldRule("variable name", maxLength: 64, form: "[A-Za-z_][A-Za-z0-9_]{0,63}") { u in
        guard let f = u.first, isAlnum(f) || f == UInt8(ascii: "_"), !isDigit(f) else { return false }
        return u.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") }
    }

    /// A short value (an Ansible variable): 1-256 printable ASCII characters (space included).
    public static let shortValue = FieldRule("value", maxLength: 256, form: "1-256 printable ASCII characters") { u in
        u.allSatisfy { $0 >= 0x20 && $0 < 0x7f }
    }

    /// An IPv4 or IPv6 address as LXD reports it (digits, hex, `.` and `:`), at most 45 characters.
    public static let address = FieldRule("address", maxLength: 45, form: "an IPv4 or IPv6 address") { u in
        u.allSatisfy { isHex($0) || isDigit($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") || ($0 >= 0x41 && $0 <= 0x46) }
    }

    /// A request nonce: 16-64 of `[A-Za-z0-9_-]` (base64url).
    public static let nonce = FieldRule("nonce", maxLength: 64, form: "16-64 base64url characters") { u in
        u.count >= 16 && u.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    /// A host name (no port): 1-253 characters, dot-separated labels of 1-63 `[a-z0-9-]` that start and end
    /// with a letter or digit; or an IPv4 address.
    public static let host = FieldRule("host", maxLength: 253, form: "a lowercase host name or IPv4 address") { u in
        u.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).allSatisfy { label in
            guard let f = label.first, let l = label.last, isLowerAlnum(f), isLowerAlnum(l), label.count <= 63 else { return false }
            return label.allSatisfy { isLowerAlnum($0) || $0 == UInt8(ascii: "-") }
        }
    }

    /// A device path inside the container: `/dev/` and 1-4 segments of `[A-Za-z0-9._-]` (no `.`/`..`),
    /// at most 128 characters, not one of the nodes every container relies on.
    public static let containerDevicePath = FieldRule("device path", maxLength: 128,
                                                      form: "/dev/<name>[/<name>...], not a node the container itself relies on") { u in
        let s = String(Substring(u))
        guard s.hasPrefix("/dev/") else { return false }
        let segments = s.dropFirst(5).split(separator: "/", omittingEmptySubsequences: false)
        guard (1...4).contains(segments.count),
              segments.allSatisfy({ word($0.utf8, extra: "._-") && $0.count <= 64 }) else { return false }
        return !reservedDevicePaths.contains(where: { s == $0 || s.hasPrefix($0 + "/") })
    }

    /// Nodes and directories in every container's `/dev` that a vendor's device must never shadow.
    public static let reservedDevicePaths = [
        "/dev/console", "/dev/core", "/dev/fd", "/dev/full", "/dev/hugepages", "/dev/kmsg", "/dev/log", "/dev/lxd", "/dev/mqueue",
        "/dev/net", "/dev/null", "/dev/ptmx", "/dev/pts", "/dev/random", "/dev/shm", "/dev/stderr", "/dev/stdin", "/dev/stdout",
        "/dev/tty", "/dev/urandom", "/dev/zero", "/dev/fuse", "/dev/.lxd-mounts", "/dev/initctl",
    ]

    /// A URL the container or gateway connects to: `http(s)://host[:port][/path]`, no user info, at most
    /// 256 characters of `[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]` without `@` (user info).
    public static let url = FieldRule("URL", maxLength: 256, form: "http(s)://host[:port][/path] without user info") { u in
        let s = String(Substring(u))
        guard s.hasPrefix("http://") || s.hasPrefix("https://"), !s.contains("@"),
              u.allSatisfy({ isAlnum($0) || inSet($0, "._~:/?#!$&'()*+,;=%-") }),
              let parsed = URL(string: s), let host = parsed.host, !host.isEmpty else { return false }
        return true
    }

    /// A PEM block (certificate or key): BEGIN/END lines and base64 lines only, at most 16 KiB.
    public static let pem = FieldRule("PEM", maxLength: 16 * 1024, form: "a PEM block (-----BEGIN ...----- base64 -----END ...-----)") { u in
        let s = String(Substring(u))
        // "\r\n" is one Character in Swift: splitting on "\n" alone would keep CRLF lines whole.
        let lines = s.split(omittingEmptySubsequences: true) { $0 == "\n" || $0 == "\r\n" }
        func armor(_ line: Substring, _ word: String) -> Bool {
            var c = ASCIIScanner(line.utf8)
            return c.take("-----\(word) ") && c.run(1...40) { isUpperAlnum($0) || $0 == 0x20 } && c.take("-----") && c.atEnd
        }
        func header(_ line: Substring) -> Bool {
            var c = ASCIIScanner(line.utf8)
            return c.run(1...40) { isAlpha($0) || $0 == UInt8(ascii: "-") } && c.take(": ") && c.run(0...200) { $0 >= 0x20 && $0 < 0x7f }
                && c.atEnd
        }
        guard let first = lines.first, let last = lines.last, lines.count >= 3, armor(first, "BEGIN"), armor(last, "END") else { return false }
        return lines.dropFirst().dropLast().allSatisfy { line in
            line.utf8.allSatisfy { isAlnum($0) || inSet($0, "+/=") } || header(line)
        }
    }

    // MARK: Showing untrusted text

    /// `value` with every character that could act on a terminal escaped (`\u{1B}`, `\n`, bidi
    /// overrides...), cut to `max` characters (an ellipsis marks the cut). Safe to print anywhere.
    public static func escaped(_ value: String, max: Int = 4096) -> String {
        var out = ""
        var count = 0
        for scalar in value.unicodeScalars {
            if count >= max {
                out += "…"
                break
            }
            count += 1
            if isShowable(scalar) {
                out.unicodeScalars.append(scalar)
            } else {
                switch scalar {
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                default: out += "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
                }
            }
        }
        return out
    }

    /// The value quoted for an error message: escaped and at most 64 characters.
    public static func quote(_ value: String) -> String { "\"" + escaped(value, max: 64) + "\"" }

    /// Whether a scalar is safe on a terminal: not a control character (C0, DEL, C1), not a format
    /// character (bidi overrides and isolates, zero-width joiners...), not a line or paragraph
    /// separator, not a private-use or unassigned code point.
    public static func isShowable(_ s: Unicode.Scalar) -> Bool {
        switch s.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .privateUse, .surrogate, .unassigned: return false
        default: return true
        }
    }

    /// Whether every character of `value` is showable and it has at most `max` characters.
    public static func isShowable(_ value: String, max: Int) -> Bool {
        value.unicodeScalars.count <= max && value.unicodeScalars.allSatisfy { isShowable($0) }
    }

    /// Free text from the other side (an error message, a converge summary) made safe to store and
    /// show: escaped and cut to `max` characters.
    public static func displayText(_ value: String, max: Int = 512) -> String { escaped(value, max: max) }
}

/// A left-to-right reader for the few rules with structure (run-list items, PEM armour). Hand-written
/// instead of `Regex`: a regex literal is parsed again every time it is evaluated, which made checking one
/// plan's run lists cost more than verifying its signature.
struct ASCIIScanner {
    private let bytes: Substring.UTF8View
    private var at: Substring.UTF8View.Index

    init(_ bytes: Substring.UTF8View) {
        self.bytes = bytes
        self.at = bytes.startIndex
    }

    var atEnd: Bool { at == bytes.endIndex }

    /// Consumes `literal` if the input continues with it.
    mutating func take(_ literal: String) -> Bool {
        var i = at
        for b in literal.utf8 {
            guard i != bytes.endIndex, bytes[i] == b else { return false }
            i = bytes.index(after: i)
        }
        at = i
        return true
    }

    /// Consumes the longest run (at most `count.upperBound`) of bytes that `ok` accepts; true if it is at
    /// least `count.lowerBound` long. Greedy is exact here: no rule lets the next part start with a byte
    /// the run accepts.
    mutating func run(_ count: ClosedRange<Int>, _ ok: (UInt8) -> Bool) -> Bool {
        var n = 0
        while n < count.upperBound, at != bytes.endIndex, ok(bytes[at]) {
            at = bytes.index(after: at)
            n += 1
        }
        return n >= count.lowerBound
    }

    /// A Chef cookbook, recipe or role name: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}`.
    mutating func chefName() -> Bool {
        run(1...1) { Fields.isAlnum($0) || $0 == UInt8(ascii: "_") }
            && run(0...63) { Fields.isAlnum($0) || Fields.inSet($0, "_.-") }
    }
}
