import Foundation
import Glibc
import UmockdevTesting

// iotgw-devsim: simulated USB hotplug for demos and benchmarks (there is no USB bus in these VMs).
//
//   iotgw-devsim --control FIFO -- COMMAND [ARGS...]
//
// Creates a umockdev testbed, runs COMMAND under it (its libudev sees the simulated devices), and
// reads commands, one per line, from FIFO:
//   plug VID PID SERIAL DEVNODE     add a USB serial adapter whose tty is DEVNODE (a real char node
//                                   is created there if missing, so it can be passed into LXD)
//   unplug SERIAL                   remove it (remove uevents for tty, interface and device)
//   quit                            stop COMMAND (SIGTERM) and exit with its status
// Each handled command is acknowledged on stdout: "ok plug SERIAL" / "error ...".

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("iotgw-devsim: \(message)\n".utf8))
    exit(2)
}

func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

var args = Array(CommandLine.arguments.dropFirst())
guard args.count >= 3, args[0] == "--control", let sep = args.firstIndex(of: "--"), sep + 1 < args.count else {
    fail("usage: iotgw-devsim --control FIFO -- COMMAND [ARGS...]")
}
let fifo = args[1]
let command = Array(args[(sep + 1)...])

unlink(fifo)
guard mkfifo(fifo, 0o600) == 0 else { fail("cannot create \(fifo) (errno \(errno))") }
// O_RDWR: opening does not wait for a writer, and EOF never comes when writers come and go.
let fd = open(fifo, O_RDWR | O_NONBLOCK)
guard fd >= 0 else { fail("cannot open \(fifo) (errno \(errno))") }

let testbed: Testbed
do { testbed = try Testbed() } catch { fail("\(error)") }

let child = Process()
child.executableURL = URL(fileURLWithPath: command[0].contains("/") ? command[0] : "/usr/bin/env")
child.arguments = command[0].contains("/") ? Array(command.dropFirst()) : command
child.environment = ProcessInfo.processInfo.environment.merging(testbed.environment) { $1 }
do { try child.run() } catch { fail("cannot start \(command[0]): \(error)") }

signal(SIGTERM, SIG_IGN)
signal(SIGINT, SIG_IGN)
let signals = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
    let s = DispatchSource.makeSignalSource(signal: sig, queue: .main)
    s.setEventHandler { child.terminate() }
    s.resume()
    return s
}

var plugged: [String: (usb: String, node: String, created: Bool)] = [:]
var nextTTY = 0

@MainActor func handle(_ line: String) {
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
_ = signals
exit(child.terminationStatus)
