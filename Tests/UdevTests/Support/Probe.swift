import Foundation
import Testing
import Udev
import UmockdevTesting

/// The built `udev-probe` executable, run under a testbed.
enum Probe {
    /// Looks for `udev-probe` in the build products directory the tests run from. `UDEV_PROBE`
    /// overrides the lookup. Fails with instructions when it is not built.
    static func executable(sourceFile: String = #filePath) throws -> URL {
        var dirs: [URL] = []
        if let override = ProcessInfo.processInfo.environment["UDEV_PROBE"] {
            dirs.append(URL(fileURLWithPath: override).deletingLastPathComponent())
        }
        // The test runner lives in the same products directory as the package's executables.
        dirs.append(Bundle.main.bundleURL)
        dirs.append(URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent())
        if let argv0 = CommandLine.arguments.first {
            dirs.append(URL(fileURLWithPath: argv0).resolvingSymlinksInPath().deletingLastPathComponent())
        }
        // <package>/Tests/UdevTests/Support/Probe.swift -> <package>/.build/debug
        let package = URL(fileURLWithPath: sourceFile).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        dirs.append(package.appendingPathComponent(".build/debug"))

        let candidates = dirs.map { $0.appendingPathComponent("udev-probe").standardizedFileURL }
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) {
            return found
        }
        throw ChildFailure("""
            udev-probe is not built; looked in: \(candidates.map(\.path).joined(separator: ", ")). \
            Run `swift build --product udev-probe` (plain `swift test` builds it) or set UDEV_PROBE.
            """)
    }

    /// The environment for a child that should see `testbed` instead of the host's devices.
    static func environment(_ testbed: Testbed) -> [String: String] {
        ProcessInfo.processInfo.environment.merging(testbed.environment) { $1 }
    }

    /// Runs `udev-probe enumerate` under `testbed` and decodes its output.
    static func enumerate(_ testbed: Testbed, _ extra: [String] = []) async throws -> [UdevDevice] {
        try await withChild(try executable(), ["enumerate"] + extra, environment: environment(testbed)) { child in
            let status = try await child.waitForExit()
            #expect(status == 0, "udev-probe enumerate failed: \(child.stderrText)")
            return try child.remainingLines.map(decode)
        }
    }

    static func decode(_ line: String) throws -> UdevDevice {
        try JSONDecoder().decode(UdevDevice.self, from: Data(line.utf8))
    }

    static let readyLine = #"{"ready":true}"#
}

/// A real character node on the host (same major/minor as /dev/null), like the tty a USB serial
/// adapter gets; removed afterwards. Needs root, as the whole suite does.
func withHostCharNode<R>(_ body: (String) async throws -> R) async throws -> R {
    let path = "/dev/ttyIOTGW-t\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
    guard mknod(path, S_IFCHR | 0o660, dev_t((1 << 8) | 3)) == 0 else {
        throw ChildFailure("mknod \(path) failed (errno \(errno)): the Udev integration tests must run as root")
    }
    defer { unlink(path) }
    return try await body(path)
}
