import Foundation
import Testing

@testable import HostUpdate

/// Writes ustar archives byte by byte, including the entries a real `tar` would refuse to make.
struct TarBuilder {
    var data = Data()

    mutating func add(_ name: String, type: Character = "0", content: Data = Data(), link: String = "", mode: Int = 0o644,
                      ustarPrefix: String = "") {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ at: Int, _ len: Int) { for (i, b) in s.utf8.prefix(len).enumerated() { h[at + i] = b } }
        func octal(_ v: Int, _ at: Int, _ len: Int) { put(String(format: "%0\(len - 1)o", v), at, len - 1) }
        put(name, 0, 100)
        octal(mode, 100, 8)
        octal(0, 108, 8)
        octal(0, 116, 8)
        octal(content.count, 124, 12)
        octal(0, 136, 12)
        h[156] = type.asciiValue!
        put(link, 157, 100)
        put("ustar\0", 257, 6)
        put("00", 263, 2)
        put(ustarPrefix, 345, 155)
        for i in 148..<156 { h[i] = 32 }
        let sum = h.reduce(0) { $0 + Int($1) }
        octal(sum, 148, 7)
        data.append(contentsOf: h)
        data.append(content)
        data.append(Data(count: (512 - content.count % 512) % 512))
    }

    func finished() -> Data { data + Data(count: 1024) }
}

@Suite struct PlaybookArchiveTests {
    let archive = PlaybookArchive()

    func refusal(_ build: (inout TarBuilder) -> Void) -> String? {
        var t = TarBuilder()
        build(&t)
        let e = #expect(throws: HostUpdateError.self) { try archive.entries(tar: t.finished()) }
        #expect(e?.code == .unsafeArchive)
        return e?.message
    }

    @Test func aPlainPlaybookPasses() throws {
        var t = TarBuilder()
        t.add("./", type: "5", mode: 0o755)
        t.add("./site.yml", content: Data("- hosts: localhost\n".utf8))
        t.add("./roles/x/tasks/", type: "5")
        t.add("./roles/x/tasks/main.yml", content: Data("[]\n".utf8))
        t.add("./files/run.sh", content: Data("#!/bin/sh\n".utf8), mode: 0o755)
        let entries = try archive.entries(tar: t.finished())
        #expect(entries.map(\.path) == ["site.yml", "roles/x/tasks", "roles/x/tasks/main.yml", "files/run.sh"])
        #expect(entries.last?.executable == true)
    }

    @Test func linksSpecialFilesAndEscapesAreRefused() {
        #expect(refusal { $0.add("site.yml", type: "2", link: "/etc/shadow") }?.contains("symbolic link") == true)
        #expect(refusal { $0.add("site.yml", type: "1", link: "/etc/shadow") }?.contains("hard link") == true)
        #expect(refusal { $0.add("dev", type: "3") }?.contains("device") == true)
        #expect(refusal { $0.add("dev", type: "4") }?.contains("device") == true)
        #expect(refusal { $0.add("fifo", type: "6") }?.contains("FIFO") == true)
        #expect(refusal { $0.add("/etc/cron.d/x", content: Data("x".utf8)) }?.contains("absolute") == true)
        #expect(refusal { $0.add("../../etc/cron.d/x", content: Data("x".utf8)) }?.contains("..") == true)
        #expect(refusal { $0.add("roles/../../x", content: Data("x".utf8)) }?.contains("..") == true)
        // The ustar prefix is part of the name and checked the same way.
        #expect(refusal { $0.add("x", content: Data("x".utf8), ustarPrefix: "/etc") }?.contains("absolute") == true)
        #expect(refusal { $0.add("long", type: "L", content: Data("a".utf8)) }?.contains("long names") == true)
        #expect(refusal { $0.add("sparse", type: "S") }?.contains("entry type") == true)
        // A pax header may not rename what follows (that is where the rules are checked).
        let pax = Data("30 path=../../etc/cron.d/evil\n".utf8)
        #expect(refusal { $0.add("PaxHeader", type: "x", content: pax); $0.add("site.yml", content: Data("x".utf8)) }?.contains("path") == true)
    }

    @Test func duplicatesAndFilesUsedAsDirectoriesAreRefused() {
        #expect(refusal { $0.add("site.yml", content: Data("a".utf8)); $0.add("site.yml", content: Data("b".utf8)) }?.contains("twice") == true)
        #expect(refusal { $0.add("a", content: Data("a".utf8)); $0.add("a/b", content: Data("b".utf8)) }?.contains("under the file") == true)
    }

    @Test func limitsHold() {
        var small = PlaybookArchive()
        small.maxEntries = 3
        small.maxUnpackedBytes = 100
        var many = TarBuilder()
        for i in 0..<4 { many.add("f\(i)", content: Data("x".utf8)) }
        #expect((#expect(throws: HostUpdateError.self) { try small.entries(tar: many.finished()) })?.message.contains("entries") == true)
        var big = TarBuilder()
        big.add("f", content: Data(count: 101))
        #expect((#expect(throws: HostUpdateError.self) { try small.entries(tar: big.finished()) })?.message.contains("bytes") == true)
        #expect((#expect(throws: HostUpdateError.self) { try small.entries(tar: Data("not a tar".utf8)) })?.code == .unsafeArchive)
        var corrupt = TarBuilder()
        corrupt.add("site.yml", content: Data("x".utf8))
        var bytes = corrupt.finished()
        bytes[0] = UInt8(ascii: "S")  // the checksum no longer matches
        #expect((#expect(throws: HostUpdateError.self) { try small.entries(tar: bytes) })?.message.contains("checksum") == true)
    }

    /// An archive made by the system's tar (gzip'd, as the operator makes it) unpacks, and only its files appear.
    @Test func aRealTarGzUnpacks() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hostctl-archive-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let src = root.appendingPathComponent("src")
        try FileManager.default.createDirectory(at: src.appendingPathComponent("roles/r"), withIntermediateDirectories: true)
        try Data("- hosts: localhost\n".utf8).write(to: src.appendingPathComponent("site.yml"))
        try Data("x\n".utf8).write(to: src.appendingPathComponent("roles/r/main.yml"))
        let tgz = root.appendingPathComponent("p.tar.gz").path
        let tar = try #require(Subprocess.resolve("tar"), "tar is not installed")
        let r = try await Subprocess.run(tar, ["-czf", tgz, "-C", src.path, "."], output: .capture(limit: 1 << 20), timeout: .seconds(60))
        #expect(r.status == 0)
        let bytes = try await archive.tarBytes(file: tgz)
        let out = root.appendingPathComponent("out").path
        let entries = try archive.unpack(tar: bytes, into: out)
        #expect(Set(entries.filter { $0.kind == .file }.map(\.path)) == ["site.yml", "roles/r/main.yml"])
        #expect(FileManager.default.contents(atPath: out + "/roles/r/main.yml") == Data("x\n".utf8))
        // Unpacking never reuses a directory that exists (something could be planted in it).
        #expect((#expect(throws: HostUpdateError.self) { try archive.unpack(tar: bytes, into: out) })?.code == .io)
    }

    @Test func aGzipBombStopsAtTheLimit() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("hostctl-bomb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        var small = PlaybookArchive()
        small.maxUnpackedBytes = 64 * 1024
        small.maxEntries = 4
        let raw = root.appendingPathComponent("zeros").path
        try Data(count: 4 * 1024 * 1024).write(to: URL(fileURLWithPath: raw))
        let gzip = try #require(Subprocess.resolve("gzip"), "gzip is not installed")
        let r = try await Subprocess.run(gzip, ["-k", raw], output: .capture(limit: 1024), timeout: .seconds(60))
        #expect(r.status == 0)
        let e = await #expect(throws: HostUpdateError.self) { try await small.tarBytes(file: raw + ".gz") }
        #expect(e?.code == .unsafeArchive)
        #expect(e?.message.contains("decompresses to more than") == true)
    }
}
