import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The operator's playbook archive, unpacked on the host (as root) by this code and never by `tar`:
/// the same rules as for vendors' archives, enforced entry by entry before anything is written.
/// Only regular files and directories; no absolute path, no `..`, no link (hard or symbolic), no
/// device, FIFO or socket; limits on entries, names and total size; owners and modes from the archive
/// are ignored (files 0644, or 0755 when executable; directories 0755). gzip'd archives are
/// decompressed by `gzip -dc` with its output bounded, so a decompression bomb stops at the limit.
public struct PlaybookArchive: Sendable {
    public var maxEntries = 512
    public var maxUnpackedBytes = 32 * 1024 * 1024
    public var maxNameBytes = 255
    public var maxDepth = 16

    public init() {}

    /// One entry that passed the rules.
    public struct Entry: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case file, directory }
        public var path: String
        public var kind: Kind
        public var executable: Bool
        /// The file's bytes in the tar.
        var range: Range<Int>
    }

    /// Parses an uncompressed tar and checks every entry; throws ``HostUpdateError/Code/unsafeArchive``.
    public func entries(tar: Data) throws -> [Entry] {
        let bytes = [UInt8](tar)
        var entries: [Entry] = []
        var seen: [String: Entry.Kind] = [:]
        var total = 0
        var offset = 0
        func refuse(_ why: String) -> HostUpdateError { HostUpdateError(.unsafeArchive, "the playbook archive is refused: \(why)") }

        while true {
            guard offset + 512 <= bytes.count else { throw refuse("it ends without the end-of-archive blocks (not a tar?)") }
            let h = bytes[offset..<offset + 512]
            if h.allSatisfy({ $0 == 0 }) { break }
            guard Self.checksumMatches(h) else { throw refuse("header at byte \(offset) has a bad checksum (not a tar?)") }
            let type = h[h.startIndex + 156]
            guard let size = Self.octal(h, 124, 12) else { throw refuse("entry at byte \(offset) has an unreadable size") }
            let dataStart = offset + 512
            let padded = (size + 511) / 512 * 512
            guard size >= 0, dataStart + padded <= bytes.count else { throw refuse("an entry runs past the end of the archive") }
            offset = dataStart + padded

            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "g"):
                // pax headers (bsdtar adds them for timestamps and xattrs): allowed only when they do not
                // rename, relink or resize what follows, since that is where the rules above are checked.
                guard size <= 64 * 1024 else { throw refuse("a pax header is too large") }
                let records = try Self.paxRecords(Array(bytes[dataStart..<dataStart + size]))
                for key in records.keys where ["path", "linkpath", "size"].contains(key) || key.hasPrefix("GNU.sparse") {
                    throw refuse("a pax header sets \(key) (long names and sparse files are not supported)")
                }
                continue
            case UInt8(ascii: "L"), UInt8(ascii: "K"):
                throw refuse("GNU long names or links are not supported (names must fit in 100 bytes)")
            default: break
            }

            let ustar = Array(h[h.startIndex + 257..<h.startIndex + 263]) == Array("ustar\0".utf8)
            var name = Self.string(h, 0, 100)
            if ustar {
                let prefix = Self.string(h, 345, 155)
                if !prefix.isEmpty { name = prefix + "/" + name }
            }
            let kind: Entry.Kind
            switch type {
            case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): kind = .file
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "1"): throw refuse("\(Self.shown(name)) is a hard link")
            case UInt8(ascii: "2"): throw refuse("\(Self.shown(name)) is a symbolic link")
            case UInt8(ascii: "3"), UInt8(ascii: "4"): throw refuse("\(Self.shown(name)) is a device node")
            case UInt8(ascii: "6"): throw refuse("\(Self.shown(name)) is a FIFO")
            default: throw refuse("\(Self.shown(name)) has entry type \(Self.shown(String(decoding: [type], as: UTF8.self))), not a file or directory")
            }
            let path = try clean(name, refuse)
            if kind == .directory {
                guard size == 0 else { throw refuse("directory \(Self.shown(path)) has content") }
                if path.isEmpty { continue }  // "./" itself
            } else if path.isEmpty {
                throw refuse("a file entry has no name")
            }
            // Every parent must be (or become) a directory, and no path may appear twice.
            let parts = path.split(separator: "/")
            for i in 1..<max(parts.count, 1) {
                let parent = parts[0..<i].joined(separator: "/")
                if seen[parent] == .file { throw refuse("\(Self.shown(path)) is under the file \(Self.shown(parent))") }
                seen[parent] = .directory
            }
            if let earlier = seen[path] {
                guard earlier == .directory, kind == .directory else { throw refuse("\(Self.shown(path)) appears twice") }
                continue
            }
            seen[path] = kind
            total += size
            guard total <= maxUnpackedBytes else { throw refuse("it unpacks to more than \(maxUnpackedBytes) bytes") }
            let mode = Self.octal(h, 100, 8) ?? 0o644
            entries.append(Entry(path: path, kind: kind, executable: mode & 0o111 != 0, range: dataStart..<dataStart + size))
            guard entries.count <= maxEntries else { throw refuse("it has more than \(maxEntries) entries") }
        }
        return entries
    }

    /// Writes the checked entries under `directory`, which must not exist yet (so nothing in it can be
    /// a link planted before). Files are created with O_EXCL | O_NOFOLLOW.
    public func unpack(tar: Data, into directory: String) throws -> [Entry] {
        let entries = try entries(tar: tar)
        guard mkdir(directory, 0o755) == 0 else { throw HostUpdateError(.io, "cannot create \(directory): errno \(errno)") }
        func ensureDirectory(_ rel: String) throws {
            var path = directory
            for part in rel.split(separator: "/") {
                path += "/" + part
                if mkdir(path, 0o755) != 0 && errno != EEXIST { throw HostUpdateError(.io, "cannot create \(path): errno \(errno)") }
            }
        }
        for e in entries {
            switch e.kind {
            case .directory: try ensureDirectory(e.path)
            case .file:
                try ensureDirectory((e.path as NSString).deletingLastPathComponent)
                let path = directory + "/" + e.path
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, e.executable ? 0o755 : 0o644)
                guard fd >= 0 else { throw HostUpdateError(.io, "cannot create \(path): errno \(errno)") }
                defer { close(fd) }
                let ok = tar.withUnsafeBytes { raw -> Bool in
                    var off = e.range.lowerBound
                    while off < e.range.upperBound {
                        // Invariant: `range` lies inside `tar` (checked while parsing), so baseAddress is non-nil here.
                        let n = write(fd, raw.baseAddress! + off, e.range.upperBound - off)
                        if n < 0 { if errno == EINTR { continue }; return false }
                        off += n
                    }
                    return true
                }
                guard ok else { throw HostUpdateError(.io, "cannot write \(path): errno \(errno)") }
            }
        }
        return entries
    }

    /// The tar inside a file: gzip'd ones are decompressed with a bounded output.
    public func tarBytes(file path: String) async throws -> Data {
        guard let head = FileHandle(forReadingAtPath: path).flatMap({ h in defer { try? h.close() }; return try? h.read(upToCount: 2) }) else {
            throw HostUpdateError(.io, "cannot read \(path)")
        }
        guard head == Data([0x1f, 0x8b]) else {
            guard let data = FileManager.default.contents(atPath: path) else { throw HostUpdateError(.io, "cannot read \(path)") }
            return data
        }
        guard let gzip = Subprocess.resolve("gzip") else { throw HostUpdateError(.unsafeArchive, "gzip is not installed") }
        // The tar's own overhead: a header per entry, the end blocks, record padding.
        let limit = maxUnpackedBytes + (maxEntries + 4) * 1024 + 10240
        let r = try await Subprocess.run(gzip, ["-dc"], stdin: path, output: .capture(limit: limit), timeout: .seconds(120))
        guard !r.exceededLimit else {
            throw HostUpdateError(.unsafeArchive, "the playbook archive is refused: it decompresses to more than \(limit) bytes")
        }
        guard r.status == 0, !r.timedOut else { throw HostUpdateError(.unsafeArchive, "the playbook archive is not valid gzip") }
        return r.stdout
    }

    /// A relative path with no `..`, no empty or absolute start, no NUL; `.` parts dropped.
    func clean(_ name: String, _ refuse: (String) -> HostUpdateError) throws -> String {
        guard !name.hasPrefix("/") else { throw refuse("\(Self.shown(name)) is an absolute path") }
        guard name.utf8.count <= maxNameBytes else { throw refuse("a name is longer than \(maxNameBytes) bytes") }
        guard !name.utf8.contains(0), !name.contains("\\") else { throw refuse("\(Self.shown(name)) has a NUL or backslash") }
        var parts: [Substring] = []
        for part in name.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { throw refuse("\(Self.shown(name)) contains '..'") }
            parts.append(part)
        }
        guard parts.count <= maxDepth else { throw refuse("\(Self.shown(name)) is nested deeper than \(maxDepth)") }
        return parts.joined(separator: "/")
    }

    static func string(_ h: ArraySlice<UInt8>, _ at: Int, _ len: Int) -> String {
        let field = h[h.startIndex + at..<h.startIndex + at + len]
        return String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An octal field (NUL/space padded); nil for base-256 or garbage.
    static func octal(_ h: ArraySlice<UInt8>, _ at: Int, _ len: Int) -> Int? {
        let field = h[h.startIndex + at..<h.startIndex + at + len]
        guard let first = field.first, first & 0x80 == 0 else { return nil }
        let digits = String(decoding: field.prefix { $0 != 0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        if digits.isEmpty { return 0 }
        guard digits.count <= 11 else { return nil }
        return Int(digits, radix: 8)
    }

    static func checksumMatches(_ h: ArraySlice<UInt8>) -> Bool {
        guard let stored = octal(h, 148, 8) else { return false }
        var sum = 0
        for (i, b) in h.enumerated() { sum += (148..<156).contains(i) ? 32 : Int(b) }
        return sum == stored
    }

    /// pax records: "LEN key=value\n".
    static func paxRecords(_ data: [UInt8]) throws -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        while i < data.count {
            guard let space = data[i...].firstIndex(of: UInt8(ascii: " ")),
                  let len = Int(String(decoding: data[i..<space], as: UTF8.self)), len > 0, i + len <= data.count else {
                throw HostUpdateError(.unsafeArchive, "the playbook archive is refused: a pax header is malformed")
            }
            let record = String(decoding: data[(space + 1)..<(i + len)], as: UTF8.self)
            if let eq = record.firstIndex(of: "=") { out[String(record[..<eq])] = String(record[record.index(after: eq)...]) }
            i += len
        }
        return out
    }

    static func shown(_ s: String) -> String {
        "'" + String(s.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? "?" : Character($0) }.prefix(120)) + "'"
    }
}
