import CUdev
import Foundation
import Glibc
import Logging
import Synchronization

/// Hotplug events from udev (the `udev` netlink group: events udevd has finished processing,
/// with all its properties), filtered by subsystem.
///
/// The netlink socket is bound in `init`, so events queue in the kernel from that moment even
/// before anyone iterates; start the monitor first, then ``Udev/enumerate(subsystems:includeUninitialized:)``,
/// then consume ``events()`` (see ``Udev`` for the full pattern).
///
/// ```swift
/// let monitor = try UdevMonitor(subsystems: ["usb", "tty"], logger: logger)
/// for try await device in monitor.events() {
///     logger.info("udev event", metadata: ["udev.action": "\(device.action ?? "")", "udev.syspath": "\(device.syspath)"])
/// }
/// ```
///
/// The socket is read on a dedicated thread (never on Swift's cooperative pool) that polls
/// with a short timeout; it stops within ~100 ms once the consuming task is cancelled, the
/// stream is dropped, or the loop breaks, and then releases the libudev handles. Events are
/// buffered between that thread and the consumer without limit (udev traffic is low), so none
/// is dropped while the consumer is busy. For `usb`, only whole devices (`usb_device`) are
/// delivered, never interfaces.
///
/// Events come from `systemd-udevd`: on a host without it, libudev receives nothing (it even
/// stops subscribing when `/run/udev/control` is missing and `/dev` is not a devtmpfs). Under a
/// umockdev testbed the testbed plays udevd's part.
public final class UdevMonitor: Sendable {
    /// The subsystems this monitor delivers (all when empty).
    public let subsystems: [String]
    private let handle: Mutex<MonitorHandle?>
    private let logger: Logger

    /// Whether this monitor's reader thread has ended (and released the libudev handles); for tests.
    let readerState = ReaderState()

    /// How long the reader thread blocks in `poll()` before it re-checks for termination, when it has no
    /// stop pipe to wake it (see `StopFlag`).
    static let pollTimeoutMilliseconds: Int32 = 100

    /// Creates the netlink monitor and starts receiving (events queue from now on).
    ///
    /// - Parameters:
    ///   - subsystems: Kernel subsystems to deliver, e.g. `["usb", "tty"]`; empty means all.
    ///   - logger: Told about socket overruns (warning) and messages libudev rejected (debug).
    public init(subsystems: [String], logger: Logger = Logger(label: "udev", factory: { _ in SwiftLogNoOpLogHandler() })) throws {
        self.subsystems = subsystems
        self.logger = logger
        self.handle = Mutex(try MonitorHandle(subsystems: subsystems))
    }

    /// The events, in the order udev sent them. Call once: the monitor has one socket, and a second
    /// call returns a stream that fails with ``UdevError/Code/alreadyConsumed``.
    ///
    /// The stream ends with ``UdevError/Code/receiveFailed`` if the socket fails, and ends
    /// without error when the consuming task is cancelled.
    public func events() -> AsyncThrowingStream<UdevDevice, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: UdevDevice.self, throwing: (any Error).self)
        // Moved (not copied) into a box for the thread, so that the thread holds the only reference
        // and releases it (deinit: the unrefs) on itself before it reports that it exited.
        let handoff = Mutex<MonitorHandle?>(handle.withLock { h in defer { h = nil }; return h })
        guard handoff.withLock({ $0 != nil }) else {
            continuation.finish(throwing: UdevError(code: .alreadyConsumed, message: "events() was already called on this UdevMonitor"))
            return stream
        }
        let stop = StopFlag()
        continuation.onTermination = { _ in stop.set() }
        let logger = logger
        let state = readerState
        state.started.store(true, ordering: .releasing)
        let thread = Thread {
            cudev_name_this_thread("udev-monitor")
            if let handle = handoff.withLock({ h -> MonitorHandle? in defer { h = nil }; return h }) {
                handle.run(until: stop, yieldingTo: continuation, logger: logger)
            }
            state.exited.store(true, ordering: .releasing)
        }
        thread.name = "udev-monitor"
        thread.start()
        return stream
    }
}

/// Lifecycle of a monitor's reader thread, observable from tests.
final class ReaderState: Sendable {
    let started = Atomic<Bool>(false)
    let exited = Atomic<Bool>(false)
    var hasStarted: Bool { started.load(ordering: .acquiring) }
    var hasExited: Bool { exited.load(ordering: .acquiring) }
}

/// Set once by the stream's termination handler, read by the reader thread. Setting it also writes a
/// byte to a pipe the reader polls with the monitor's socket, so the reader sleeps in `poll()` until an
/// event or the stop, rather than waking ten times a second to look at the flag (an idle gateway's
/// wakeups, and code it kept resident). Without a pipe (none could be made) the reader looks every
/// ``UdevMonitor/pollTimeoutMilliseconds``.
private final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    /// The pipe's read end (polled by the reader) and write end; -1 when there is none.
    let wakeRead: Int32
    private let wakeWrite: Int32

    init() {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            (wakeRead, wakeWrite) = (-1, -1)
            return
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        (wakeRead, wakeWrite) = (fds[0], fds[1])
    }

    deinit {
        if wakeRead >= 0 { close(wakeRead) }
        if wakeWrite >= 0 { close(wakeWrite) }
    }

    func set() {
        flag.store(true, ordering: .releasing)
        var byte: UInt8 = 1
        if wakeWrite >= 0 { _ = write(wakeWrite, &byte, 1) }
    }

    var isSet: Bool { flag.load(ordering: .acquiring) }
}

/// Owns a `udev` context and its `udev_monitor`.
///
/// `@unchecked Sendable` because libudev handles are not thread-safe: they are created in
/// `UdevMonitor.init`, then handed over (through a `Mutex`, taken exactly once) to the single
/// reader thread, which is the only code that touches them until it ends and `deinit` unrefs them.
/// If `events()` is never called, `deinit` runs when the `UdevMonitor` is released; no thread
/// has seen the handles then.
private final class MonitorHandle: @unchecked Sendable {
    let udev: OpaquePointer
    let monitor: OpaquePointer

    init(subsystems: [String]) throws {
        guard let udev = udev_new() else {
            throw UdevError(code: .contextUnavailable, errno: Glibc.errno, message: "udev_new failed")
        }
        guard let monitor = udev_monitor_new_from_netlink(udev, "udev") else {
            let e = Glibc.errno
            udev_unref(udev)
            throw UdevError(code: .monitorUnavailable, errno: e, message: "udev_monitor_new_from_netlink(udev) failed")
        }
        self.udev = udev
        self.monitor = monitor
        // From here on, deinit releases both handles if a step below throws.
        for subsystem in subsystems {
            // Interfaces share the usb subsystem; let the kernel-side filter drop them.
            let r = udev_monitor_filter_add_match_subsystem_devtype(monitor, subsystem, subsystem == "usb" ? "usb_device" : nil)
            guard r >= 0 else {
                throw UdevError(code: .monitorUnavailable, errno: -r, message: "cannot filter subsystem \(subsystem)")
            }
        }
        // Best effort: a bigger buffer survives bursts (a hub full of devices at boot); needs no privilege up to rmem_max.
        _ = udev_monitor_set_receive_buffer_size(monitor, 4 << 20)
        let r = udev_monitor_enable_receiving(monitor)
        guard r >= 0 else {
            throw UdevError(code: .monitorUnavailable, errno: -r, message: "udev_monitor_enable_receiving failed")
        }
    }

    deinit {
        udev_monitor_unref(monitor)
        udev_unref(udev)
    }

    /// The receive loop; runs on the dedicated reader thread only.
    func run(until stop: StopFlag, yieldingTo continuation: AsyncThrowingStream<UdevDevice, any Error>.Continuation, logger: Logger) {
        let fd = udev_monitor_get_fd(monitor)
        // The stop pipe's read end is polled too (its byte ends the loop); fd -1 is ignored by poll().
        let timeout = stop.wakeRead >= 0 ? -1 : UdevMonitor.pollTimeoutMilliseconds
        // poll() sets each entry's revents afresh on every call.
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stop.wakeRead, events: Int16(POLLIN), revents: 0)]
        while !stop.isSet {
            let ready = poll(&fds, 2, timeout)
            let pfd = fds[0]
            if ready < 0 {
                let e = Glibc.errno
                if e == EINTR { continue }
                continuation.finish(throwing: UdevError(code: .receiveFailed, errno: e, message: "poll on the udev monitor socket failed"))
                return
            }
            if ready == 0 || pfd.revents == 0 { continue }
            if pfd.revents & Int16(POLLNVAL) != 0 {
                continuation.finish(throwing: UdevError(code: .receiveFailed, errno: EBADF, message: "udev monitor socket is closed"))
                return
            }
            // Drain: libudev returns NULL with EAGAIN once the socket is empty. Other NULLs are
            // messages it rejected (filtered, malformed, untrusted sender) or ENOBUFS (overrun).
            while !stop.isSet {
                Glibc.errno = 0
                guard let device = udev_monitor_receive_device(monitor) else {
                    let e = Glibc.errno
                    if e == ENOBUFS {
                        logger.warning("udev monitor overrun: events were lost", metadata: ["udev.errno": "\(e)"])
                    } else if e != EAGAIN && e != EWOULDBLOCK && e != 0 {
                        logger.debug("udev message ignored", metadata: ["udev.errno": "\(e)"])
                    }
                    break
                }
                let event = UdevDevice(reading: device)
                udev_device_unref(device)
                if case .terminated = continuation.yield(event) { return }
            }
        }
        continuation.finish()
    }
}
