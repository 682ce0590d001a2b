import Foundation
import Testing
@testable import GatewayAgent

#if canImport(Glibc)
import Glibc
#endif

@Suite struct IdleMemoryTests {
    @Test func fileMappingsAreGivenBackButNotSharedWritableOnes() {
        let maps = """
        55d0c0a00000-55d0c0b48000 r--p 00000000 00:2a 1234                       /usr/bin/iot-gateway-client
        55d0c0b48000-55d0c30e7000 r-xp 00148000 00:2a 1234                       /usr/bin/iot-gateway-client
        55d0c30e7000-55d0c3200000 rw-p 026e7000 00:2a 1234                       /usr/bin/iot-gateway-client
        55d0c4000000-55d0c4100000 rw-p 00000000 00:00 0                          [heap]
        7f0000000000-7f0000021000 rw-p 00000000 00:00 0
        7f1000000000-7f1000010000 r--s 00000000 00:05 9                          /dev/shm/something
        7f1800000000-7f1800008000 rw-s 00000000 00:2a 78                         /var/lib/iot-gateway/gateway.sqlite-shm
        7f2000000000-7f2000001000 r--p 00000000 00:2a 77                         /var/tmp/gone (deleted)
        7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
        """
        let regions = IdleMemory.fileRegions(maps)
        #expect(regions.map(\.start) == [0x55d0c0a00000, 0x55d0c0b48000, 0x55d0c30e7000, 0x7f1000000000])
        #expect(regions.map(\.length) == [0x148000, 0x259f000, 0x119000, 0x10000])
    }

    /// A file mapped read-only and read through is resident; after a trim it is not, and reading it again
    /// brings back only what is read.
    @Test func aTrimGivesBackCleanFilePagesAndTheyComeBackWhenRead() throws {
        let size = 8 << 20
        let path = "/var/tmp/iotgw-idle-\(UUID().uuidString.lowercased())"
        defer { unlink(path) }
        try Data(repeating: 7, count: size).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(fsync(fd) == 0)  // clean pages: nothing to write back
        let base = try #require(mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0))
        try #require(base != MAP_FAILED)
        defer { munmap(base, size) }
        let bytes = base.assumingMemoryBound(to: UInt8.self)
        var sum = 0
        for page in stride(from: 0, to: size, by: 4096) { sum &+= Int(bytes[page]) }
        #expect(sum == 7 * size / 4096)
        let before = try #require(try Self.residentKiB(of: base))
        #expect(before >= size / 1024 * 9 / 10, "read through: \(before) KiB resident")

        let outcome = try #require(IdleMemory.trim())
        #expect(outcome.rssBeforeKiB > 0 && outcome.rssAfterKiB > 0)
        let after = try #require(try Self.residentKiB(of: base))
        #expect(after <= size / 1024 / 10, "after the trim: \(after) KiB of \(size / 1024) resident")

        // One page read: it comes back alone, not with megabytes around it.
        #expect(bytes[size / 2] == 7)
        let again = try #require(try Self.residentKiB(of: base))
        #expect(again <= after + 64, "one page read after the trim: \(again) KiB resident (\(after) before)")
    }

    /// The sampler's resident size comes from statm without any `String`: it must agree with VmRSS, and a
    /// malformed text gives nil, never a number from the wrong field.
    @Test func residentSizeFromStatmAgreesWithVmRSS() throws {
        let statm = try #require(IdleMemory.residentKiB())
        let status = try #require(IdleMemory.procField("VmRSS:", in: "/proc/self/status"))
        // Two reads a moment apart of a live process (the test runner allocates meanwhile).
        #expect(abs(statm - status) <= max(1024, status / 20), "statm \(statm) KiB, status \(status) KiB")
        func second(_ text: String) -> Int? {
            Array(text.utf8).withUnsafeBufferPointer { IdleMemory.secondNumber($0) }
        }
        #expect(second("8123 4567 890 12 0 345 0\n") == 4567)
        #expect(second("8123 4567") == 4567)
        #expect(second("8123") == nil)
        #expect(second("") == nil)
        #expect(second("8123  4567 1\n") == nil)
        #expect(second("x 4567 1\n") == nil)
        #expect(second("1 99999999999999999999 1\n") == nil)
    }

    /// The resident KiB of this process's mapping that starts at `address`.
    static func residentKiB(of address: UnsafeMutableRawPointer) throws -> Int? {
        let start = String(UInt(bitPattern: address), radix: 16)
        let smaps = try #require(IdleMemory.readProcFile("/proc/self/smaps"))
        var inside = false
        for line in smaps.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), line[..<dash].allSatisfy(\.isHexDigit) {
                inside = line[..<dash].drop(while: { $0 == "0" }) == start.drop(while: { $0 == "0" })
            } else if inside, line.hasPrefix("Rss:") {
                return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
            }
        }
        return nil
    }

    @Test func theHeapIsHeldToTwoArenasUnlessTheOwnerSetMallocArenaMax() {
        // glibc's mallopt answers 1 when it took the setting; the owner's MALLOC_ARENA_MAX is left in force.
        #expect(IdleMemory.limitArenas(environment: [:]))
        // The other tests in this process run with glibc's own limit again (0: eight arenas per processor).
        #expect(IdleMemory.mallOpt?(IdleMemory.mArenaMax, 0) == 1)
        #expect(!IdleMemory.limitArenas(environment: ["MALLOC_ARENA_MAX": "4"]))
    }
}

@Suite struct IdleMemoryPolicyTests {
    /// 5 s quiet sampled every second: 1 % of a processor is 50 ms over the window.
    static func policy(minimumIntervalSeconds: Double = 0) -> IdleMemory.Policy {
        IdleMemory.Policy(quietSeconds: 5, sampleSeconds: 1, minimumIntervalSeconds: minimumIntervalSeconds)
    }

    /// A vendor waking the daemon with a burst every 15 s, each leaving 9 MiB resident: one trim per 5 minutes.
    @Test func burstsOfWorkGetOneTrimEveryFiveMinutesAtMost() {
        var p = Self.policy(minimumIntervalSeconds: 300)
        var cpu = 0.0
        var trims: [Int] = []
        var rss = 40_000
        for second in 0..<900 {
            if second % 15 == 0 { cpu += 0.2; rss += 9_000 } else { cpu += 0.001 }
            if p.observe(processorSeconds: cpu, residentKiB: rss) {
                trims.append(second)
                p.trimmed(processorSeconds: cpu)
                rss = 20_000
            }
        }
        #expect(trims.count == 3, "trims at \(trims)")
        #expect(zip(trims, trims.dropFirst()).allSatisfy { $1 - $0 >= 300 }, "trims at \(trims)")
    }

    @Test func theFirstQuietSpellTrimsAndAnIdleDaemonIsNotTrimmedAgain() {
        var p = Self.policy()
        var cpu = 10.0
        // Busy: 100 ms a second.
        for _ in 0..<8 { cpu += 0.1; let due = p.observe(processorSeconds: cpu, residentKiB: 43_000); #expect(!due) }
        // Quiet: 5 ms a second; the window must be quiet throughout before the trim.
        var trimmedAt: Int?
        for i in 0..<10 {
            cpu += 0.005
            if p.observe(processorSeconds: cpu, residentKiB: 43_000) { trimmedAt = i; break }
        }
        #expect(trimmedAt == 4)
        p.trimmed(processorSeconds: cpu)
        // The idle ticks read their code back (13 MiB to 20), then nothing changes: one more quiet spell sets
        // the floor, and no later sample trims again.
        for i in 0..<60 {
            cpu += 0.005
            let due = p.observe(processorSeconds: cpu, residentKiB: i < 3 ? 13_000 + i * 2_500 : 20_000); #expect(!due)
        }
    }

    @Test func workThatLeavesCodeResidentIsTrimmedAtTheNextQuietSpellButWorkThatDoesNotIsNot() {
        var p = Self.policy()
        var cpu = 1.0
        for _ in 0..<5 { cpu += 0.001; _ = p.observe(processorSeconds: cpu, residentKiB: 40_000) }
        p.trimmed(processorSeconds: cpu)
        for _ in 0..<5 { cpu += 0.001; let due = p.observe(processorSeconds: cpu, residentKiB: 20_000); #expect(!due) }
        // A replug: 30 ms of work (quiet by processor), 1 MiB more resident: within the slack.
        cpu += 0.03
        for _ in 0..<10 { cpu += 0.001; let due = p.observe(processorSeconds: cpu, residentKiB: 21_000); #expect(!due) }
        // A delivery: busy for a while, 9 MiB more resident: trimmed once the window is quiet again.
        for _ in 0..<3 { cpu += 0.5; let due = p.observe(processorSeconds: cpu, residentKiB: 29_000); #expect(!due) }
        var trims = 0
        for _ in 0..<6 {
            cpu += 0.001
            if p.observe(processorSeconds: cpu, residentKiB: 29_000) { trims += 1; p.trimmed(processorSeconds: cpu) }
        }
        #expect(trims == 1)
    }

    @Test func anIdleMemoryTrimOfZeroSecondsIsOffAndOthersOutOfRangeAreRefused() throws {
        let off = try Self.load(Self.yaml("memory: {idleTrimSeconds: 0}"))
        #expect(off.memory.idleTrimSeconds == 0)
        #expect(try Self.load(Self.yaml("")).memory.idleTrimSeconds == 5)
        #expect(throws: ConfigError.self) { try Self.load(Self.yaml("memory: {idleTrimSeconds: 0.5}")) }
        #expect(throws: ConfigError.self) { try Self.load(Self.yaml("memory: {idleTrimSeconds: -1}")) }
    }

    static func load(_ yaml: String) throws -> GatewayConfig {
        let path = "/tmp/iotgw-memory-\(UUID().uuidString.lowercased()).yaml"
        defer { unlink(path) }
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return try GatewayConfig.load(path: path)
    }

    static func yaml(_ extra: String) -> String {
        """
        stateDirectory: /var/lib/iot-gateway
        vendors: []
        \(extra)
        """
    }
}
