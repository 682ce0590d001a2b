import Foundation
import Testing
@testable import Udev

/// The monitor's lifecycle in this process, against the host's real netlink socket (no devices
/// needed): the reader thread must end, and release libudev, whenever the consumer goes away.
@Suite(.serialized) struct UdevMonitorLifecycleTests {
    @Test func cancellingTheConsumerStopsTheReaderThread() async throws {
        let monitor = try UdevMonitor(subsystems: ["usb", "tty"])
        let events = monitor.events()
        #expect(monitor.readerState.hasStarted)
        let consumer = Task {
            var count = 0
            for try await _ in events { count += 1 }
            return count
        }
        try await Task.sleep(for: .milliseconds(150))
        consumer.cancel()
        _ = try await consumer.value  // ends without error on cancellation
        #expect(try await eventually { monitor.readerState.hasExited },
                "reader thread still running 5 s after the consumer was cancelled")
    }

    @Test func droppingTheSequenceStopsTheReaderThread() async throws {
        let monitor = try UdevMonitor(subsystems: ["tty"])
        do {
            let events = monitor.events()
            _ = events.makeAsyncIterator()  // started, never awaited, then dropped
        }
        #expect(try await eventually { monitor.readerState.hasExited },
                "reader thread still running 5 s after the stream was dropped")
    }

    /// With no events the reader thread sleeps in poll() until its stop: it used to wake ten times a second
    /// to look at a flag (an idle gateway's wakeups, and code it kept resident). Counted from its context switches.
    @Test func anIdleReaderThreadSleepsUntilStopped() async throws {
        func readers() -> [String: Int] {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            var found: [String: Int] = [:]
            for tid in tasks {
                guard let comm = try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8),
                      comm.hasPrefix("udev-monitor") else { continue }
                let status = (try? String(contentsOfFile: "/proc/self/task/\(tid)/status", encoding: .utf8)) ?? ""
                let line = status.split(separator: "\n").first { $0.hasPrefix("voluntary_ctxt_switches:") }
                found[tid] = line.flatMap { Int($0.split(separator: "\t").last ?? "") } ?? -1
            }
            return found
        }
        let before = readers()
        // A subsystem no test plugs: the kernel-side filter keeps other tests' events off this socket.
        let monitor = try UdevMonitor(subsystems: ["iotgw-none"])
        let events = monitor.events()
        let consumer = Task { for try await _ in events {} }
        var started: String?
        _ = try await eventually {
            started = readers().keys.first { before[$0] == nil }
            return started != nil
        }
        let tid = try #require(started, "no new udev-monitor thread")
        let start = try #require(readers()[tid])
        try await Task.sleep(for: .seconds(1))
        let end = try #require(readers()[tid])
        #expect(end - start <= 2, "the idle reader thread woke \(end - start) times in a second")
        consumer.cancel()
        #expect(try await eventually { monitor.readerState.hasExited }, "reader thread still running 5 s after the consumer was cancelled")
    }

    @Test func eventsCanBeTakenOnlyOnce() async throws {
        let monitor = try UdevMonitor(subsystems: ["usb"])
        let first = monitor.events()
        await #expect {
            for try await _ in monitor.events() {}
        } throws: { ($0 as? UdevError)?.code == .alreadyConsumed }
        _ = first
    }

    @Test func unconsumedMonitorIsReleasedWithoutAThread() throws {
        let monitor = try UdevMonitor(subsystems: [])
        #expect(!monitor.readerState.hasStarted)
        #expect(monitor.subsystems.isEmpty)
    }

    @Test func hostEnumerationNeverReturnsUSBInterfaces() throws {
        let all = try Udev.enumerate(subsystems: ["usb", "tty"], includeUninitialized: true)
        #expect(!all.contains { $0.subsystem == "usb" && $0.devtype != "usb_device" })
        #expect(all.allSatisfy { !$0.syspath.isEmpty && $0.action == nil })
        // Every Linux host has a console tty in sysfs.
        #expect(all.contains { $0.devnode == "/dev/console" })
    }
}
