import Foundation
import Glibc
import UmockdevTesting

/// Why the simulator could not start; printed as `iotgw-devsim: <message>`.
struct SetupFailure: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}

/// The testbed, COMMAND running under it, and the FIFO it takes `plug`/`unplug`/`quit` from.
/// Lives on the main thread: ``run()`` blocks it until COMMAND exits.
final class DeviceSimulator {
    private let fifo: String
    private let fd: Int32
    private let testbed: Testbed
    private let child = Process()
    private var plugged: [String: (usb: String, node: String, created: Bool)] = [:]
    private var nextTTY = 0

    /// Creates the FIFO and the testbed and starts `command` (a bare name is looked up on PATH).
    init(control fifo: String, command: [String]) throws {
        self.fifo = fifo
        unlink(fifo)
        guard mkfifo(fifo, 0o600) == 0 else { throw SetupFailure("cannot create \(fifo) (errno \(errno))") }
        // O_RDWR: opening does not wait for a writer, and EOF never comes when writers come and go.
        fd = open(fifo, O_RDWR | O_NONBLOCK)
        guard fd >= 0 else { throw SetupFailure("cannot open \(fifo) (errno \(errno))") }

        do { testbed = try Testbed() } catch { throw SetupFailure("\(error)") }

        guard let program = command.first else { throw SetupFailure("no command to run") }
        child.executableURL = URL(fileURLWithPath: program.contains("/") ? program : "/usr/bin/env")
        child.arguments = program.contains("/") ? Array(command.dropFirst()) : command
        child.environment = ProcessInfo.processInfo.environment.merging(testbed.environment) { $1 }
        do { try child.run() } catch { throw SetupFailure("cannot start \(program): \(error)") }
    }

    /// Serves the FIFO until COMMAND exits, then removes the nodes it created and the FIFO.
    /// Returns COMMAND's exit status.
    func run() -> Int32 {
        let child = child
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let signals = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .main)
            s.setEventHandler { child.terminate() }
            s.resume()
            return s
        }

        var pending = ""
        var buffer = [UInt8](repeating: 0, count: 4096)
        while child.isRunning {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 100) > 0 {
                let n = read(fd, &buffer, buffer.count)
                if n > 0 {
                    pending += String(decoding: buffer[0..<n], as: UTF8.self)
                    while let nl = pending.firstIndex(of: "\n") {
                        let line = String(pending[..<nl]).trimmingCharacters(in: .whitespaces)
                        pending = String(pending[pending.index(after: nl)...])
                        handle(line)
                    }
                }
            }
            RunLoop.main.run(until: Date())  // let the signal sources fire
        }
        child.waitUntilExit()
        for p in plugged.values where p.created { unlink(p.node) }
        close(fd)
        unlink(fifo)
        withExtendedLifetime(signals) {}
        return child.terminationStatus
    }

    private func handle(_ line: String) {
        let w = line.split(separator: " ").map(String.init)
        guard let verb = w.first else { return }
        do {
            switch verb {
            case "plug" where w.count == 5:
                let (vid, pid, serial, node) = (w[1], w[2], w[3], w[4])
                guard plugged[serial] == nil else { return say("error plug \(serial): already plugged") }
                var created = false
                if access(node, F_OK) != 0 {
                    guard mknod(node, S_IFCHR | 0o660, dev_t((1 << 8) | 5)) == 0 else { return say("error plug \(serial): mknod errno \(errno)") }
                    created = true
                }
                let a = try testbed.addUSBSerialAdapter(vendorID: vid, productID: pid, serial: serial, manufacturer: "Simulated",
                                                        product: "USB serial \(serial)", ttyName: "ttyUSB\(90 + nextTTY)", devnode: node)
                nextTTY += 1
                try testbed.uevent(a.usbSyspath, "add")
                try testbed.uevent(a.ttySyspath, "add")
                plugged[serial] = (a.usbSyspath, node, created)
                say("ok plug \(serial) \(node)")
            case "unplug" where w.count == 2:
                guard let p = plugged.removeValue(forKey: w[1]) else { return say("error unplug \(w[1]): not plugged") }
                try testbed.remove(p.usb)
                say("ok unplug \(w[1])")
            case "quit":
                child.terminate()
            default:
                say("error unknown command: \(line)")
            }
        } catch {
            say("error \(verb): \(error)")
        }
    }

    private func say(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}
