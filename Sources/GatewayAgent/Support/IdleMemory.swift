import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Gives the kernel back the memory an idle daemon holds without using it.
///
/// Most of the daemon's resident memory is not its own data but clean pages of its executable: code the
/// start, a provisioning or a delivery ran once, and code never run at all but mapped with its neighbours
/// (the kernel maps cached pages around a faulting one). Once the daemon has been quiet for a while
/// (``Policy``), ``trim()`` asks the kernel to reclaim those pages now (`MADV_PAGEOUT`: pages only this
/// process maps leave its memory and the page cache; pages shared with another process, such as most of
/// libc, stay), not to read ahead around later faults where it honours that (`MADV_RANDOM`), and returns
/// the heap's free pages (`malloc_trim`). Nothing is written anywhere: the pages are clean file pages.
///
/// Measured with `scripts/bench-provision` (December 5, kernel 6.18): 42.5 MiB before a trim, 13.8 to 15.2
/// MiB right after it, 18.5 to 19.8 MiB steady once what the idle daemon still runs (its tick, timers, LXD's
/// websocket pings) has come back: since 6.16 the kernel reads around faults in code whatever `MADV_RANDOM`
/// says. So the less code idling touches, the more a trim keeps (the store's ``ReadCache``, the control
/// socket without a date timer). The first event after a trim pays for its code too: an unplug and replug
/// took 0.09 to 0.18 s instead of 0.03 to 0.07 s.
public enum IdleMemory {
    /// What a trim did: resident memory before and after, in KiB (from `/proc/self/status`).
    public struct Outcome: Sendable, Equatable {
        public var rssBeforeKiB: Int
        public var rssAfterKiB: Int
    }

    /// Reclaims the clean file pages of this process's file mappings (``fileRegions(_:)``) and the heap's
    /// free pages. Returns nil when /proc cannot be read. A kernel without `MADV_PAGEOUT` (before 5.4)
    /// refuses it, and the daemon just keeps its pages.
    @discardableResult
    public static func trim() -> Outcome? {
        #if os(Linux)
        guard let before = residentKiB(), let maps = readProcFile("/proc/self/maps") else { return nil }
        for region in fileRegions(maps) {
            guard let start = UnsafeMutableRawPointer(bitPattern: region.start) else { continue }
            // MADV_RANDOM first, so nothing the pageout drops is read back around a later fault (the kernel
            // honours it for data; for code it reads around faults regardless, since 6.16).
            _ = madvise(start, region.length, madviseRandom)
            _ = madvise(start, region.length, madvisePageout)
        }
        _ = mallocTrim?(0)
        return Outcome(rssBeforeKiB: before, rssAfterKiB: residentKiB() ?? 0)
        #else
        return nil
        #endif
    }

    /// The most malloc arenas the daemon uses (glibc's `M_ARENA_MAX`), unless `MALLOC_ARENA_MAX` says otherwise.
    public static let arenas: Int32 = 2

    /// Holds the heap to ``arenas`` arenas. glibc gives a thread that finds the arenas busy one of its own,
    /// up to eight per processor, and each keeps the free pages its fragments pin: over 10,000 reconcile
    /// cycles of 50 vendors (`scripts/bench-reconcile`) the process grew by 4.1 MB without a limit, in steps
    /// as threads met new arenas and still growing at the end, against 1.8 MB with two and 1.5 MB with one. The daemon's
    /// few threads (Swift's cooperative pool, NIO's event loop) do little at once, so contention costs
    /// little. Call it first thing, before threads start. Returns false where it was not applied.
    @discardableResult
    public static func limitArenas(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        #if os(Linux)
        // The owner's own tuning wins: glibc read MALLOC_ARENA_MAX at start.
        guard environment["MALLOC_ARENA_MAX"] == nil, let mallopt = mallOpt else { return false }
        return mallopt(mArenaMax, arenas) == 1
        #else
        return false
        #endif
    }

    /// glibc's `M_ARENA_MAX` parameter of `mallopt`.
    static let mArenaMax: Int32 = -8

    /// glibc's `mallopt` (nil under another C library).
    static let mallOpt: (@convention(c) (Int32, Int32) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
    }()

    /// glibc's `malloc_trim` (not in the module Swift imports from glibc; nil under another C library).
    static let mallocTrim: (@convention(c) (Int) -> Int32)? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
    }()

    /// Linux's `MADV_RANDOM` and `MADV_PAGEOUT` (5.4 and later; an older kernel answers EINVAL, harmless).
    static let madviseRandom: Int32 = 1
    static let madvisePageout: Int32 = 21

    /// The file-backed mappings in a `/proc/PID/maps` text: code, constants and data of the executable and
    /// its libraries. Of a private writable mapping (a data segment) only the pages never written are file
    /// pages; the written ones are the process's own, which the kernel keeps where there is no swap. Shared
    /// writable mappings (SQLite's `-shm` index) are left alone: paging them out would write the file.
    /// Heap and stacks have no file.
    static func fileRegions(_ maps: String) -> [(start: UInt, length: Int)] {
        maps.split(separator: "\n").compactMap { line in
            // address perms offset dev inode [path]; the path is padded with spaces and may hold some.
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            let perms = fields.count >= 6 ? fields[1] : ""
            guard perms.first == "r", !(perms.contains("w") && perms.contains("s")), fields[5].hasPrefix("/"),
                  fields.last != "(deleted)" else { return nil }
            let bounds = fields[0].split(separator: "-")
            guard bounds.count == 2, let lo = UInt(bounds[0], radix: 16), let hi = UInt(bounds[1], radix: 16), hi > lo else { return nil }
            return (lo, Int(hi - lo))
        }
    }

    /// This process's resident memory (VmRSS), in KiB: the second field of `/proc/self/statm`, in pages.
    ///
    /// The idle sampler reads it every second, so it is read with as little code as can be: one `read(2)`
    /// into a buffer on the stack and the digits folded by hand. Parsing `/proc/self/status` as a `String`
    /// (splitting lines, Unicode whitespace tables) ran code an idle daemon otherwise never runs, and kept
    /// it resident: 74 page faults of the 157 that came back after a trim (`perf record -e page-faults`).
    public static func residentKiB() -> Int? {
        #if os(Linux)
        let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 128) { buffer -> Int? in
            let n = read(fd, buffer.baseAddress, buffer.count)
            guard n > 0 else { return nil }
            guard let pages = secondNumber(UnsafeBufferPointer(rebasing: buffer[..<n])) else { return nil }
            return pages * pageKiB
        }
        #else
        return nil
        #endif
    }

    /// The second of the space-separated decimal numbers in `bytes` (statm: size, resident, shared, ...).
    static func secondNumber(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var field = 0
        var value = 0
        var digits = 0
        for b in bytes {
            if b >= 0x30 && b <= 0x39 {
                value = value &* 10 &+ Int(b &- 0x30)
                digits += 1
                guard digits <= 18 else { return nil }
            } else {
                guard digits > 0 else { return nil }
                if field == 1 { return value }
                field += 1
                value = 0
                digits = 0
            }
        }
        return field == 1 && digits > 0 ? value : nil
    }

    /// The page size, in KiB.
    static let pageKiB = max(1, Int(sysconf(Int32(_SC_PAGESIZE))) / 1024)

    /// The number after `key` on its line of a /proc file (`Key:   1234 kB`).
    public static func procField(_ key: String, in path: String) -> Int? {
        guard let text = readProcFile(path) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            return line.dropFirst(key.count).split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) }
        }
        return nil
    }

    /// The whole text of a file under /proc. Foundation's `String(contentsOfFile:)` trusts the size `stat`
    /// gives, which is 0 there, and returns the first 4 KiB only.
    public static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Processor time this process has used, in seconds.
    public static func processorSeconds() -> Double {
        var ts = timespec()
        guard clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) == 0 else { return 0 }
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Runs until cancelled, sampling every fifth of `quietSeconds` (``Policy``).
    public static func watch(quietSeconds: Double, logger: Logger) async {
        guard quietSeconds > 0 else { return }
        let sample = max(0.25, quietSeconds / 5)
        var policy = Policy(quietSeconds: quietSeconds, sampleSeconds: sample)
        while !Task.isCancelled {
            do { try await Task.sleep(for: .milliseconds(Int64(sample * 1000))) } catch { return }
            guard policy.observe(processorSeconds: processorSeconds(), residentKiB: residentKiB() ?? 0) else { continue }
            guard let outcome = trim() else { return }
            logger.info("idle: memory given back", metadata: ["iotgw.rssBeforeKiB": "\(outcome.rssBeforeKiB)",
                                                              "iotgw.rssAfterKiB": "\(outcome.rssAfterKiB)"])
            // The trim's own work is not work.
            policy.trimmed(processorSeconds: processorSeconds())
        }
    }

    /// When to trim. Quiet: less than `busyShare` of a processor used over the last `quietSeconds`. The
    /// first quiet spell trims. What the idle ticks then read back settles within one more quiet spell:
    /// that resident size is the floor, and a later quiet spell trims again only when the daemon holds
    /// `slackKiB` more than it (work happened and left code resident), so an idle daemon is trimmed once,
    /// not every few seconds (each trim makes the kernel read the idle ticks' code back from the disk).
    /// Trims are at least `minimumIntervalSeconds` apart (default 5 minutes): a vendor whose plans and
    /// pushes wake the daemon in short bursts cannot make it read 25 MB from the owner's disk every few
    /// seconds.
    public struct Policy: Sendable {
        let samples: Int
        let busySeconds: Double
        let slackKiB: Int
        let minimumIntervalSamples: Int
        var samplesSinceTrim = 0
        var window: [Double] = []
        /// The resident size one quiet spell after the last trim; nil before the first trim, or while it settles.
        var floorKiB: Int?
        var settling = false

        public init(quietSeconds: Double, sampleSeconds: Double, busyShare: Double = 0.01, slackKiB: Int = 2048,
                    minimumIntervalSeconds: Double = 300) {
            samples = max(1, Int((quietSeconds / sampleSeconds).rounded(.up)))
            minimumIntervalSamples = Int((minimumIntervalSeconds / sampleSeconds).rounded(.up))
            busySeconds = busyShare * quietSeconds
            self.slackKiB = slackKiB
        }

        /// One sample; true when a trim is due now.
        public mutating func observe(processorSeconds: Double, residentKiB: Int) -> Bool {
            samplesSinceTrim += 1
            window.append(processorSeconds)
            if window.count > samples + 1 { window.removeFirst(window.count - samples - 1) }
            guard window.count == samples + 1, window[samples] - window[0] <= busySeconds else { return false }
            if settling {
                settling = false
                floorKiB = residentKiB
                return false
            }
            guard let floorKiB else { return true }
            return residentKiB > floorKiB + slackKiB && samplesSinceTrim >= minimumIntervalSamples
        }

        /// A trim was made: the quiet spell starts again, and the floor is measured at its end.
        public mutating func trimmed(processorSeconds: Double) {
            window = [processorSeconds]
            settling = true
            samplesSinceTrim = 0
        }
    }
}
