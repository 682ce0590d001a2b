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
