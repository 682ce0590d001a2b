import Foundation
import Glibc

/// The udevd → libudev monitor wire format (`struct udev_monitor_netlink_header` + NUL-separated
/// `KEY=value` properties), delivered the way umockdev's preload expects: one datagram to each
/// `$UMOCKDEV_DIR/event<fd>` socket a preloaded libudev monitor bound.
///
/// We cannot use `umockdev_testbed_uevent`: it looks the device up with libudev in *this*
/// process, which is not preloaded and so sees the host's `/sys`, and it sends only the kernel's
/// handful of properties rather than udevd's full set.
enum UeventMessage {
    static let magic: UInt32 = 0xfeed_cafe
    static let headerSize = 40

    static func encode(action: String, syspath: String, subsystem: String, seqnum: UInt64,
                       properties: [(String, String)]) -> [UInt8] {
        let devpath = String(syspath.dropFirst("/sys".count))
        var lines = ["ACTION=\(action)", "DEVPATH=\(devpath)", "SUBSYSTEM=\(subsystem)", "SEQNUM=\(seqnum)"]
        var devtype: String?
        for (key, value) in properties where !["ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM"].contains(key) {
            switch key {
            // The uevent file holds DEVNAME relative to /dev, as the kernel does; udevd sends it absolute.
            case "DEVNAME": lines.append("DEVNAME=" + (value.hasPrefix("/") ? value : "/dev/" + value))
            case "DEVTYPE": devtype = value; lines.append("DEVTYPE=\(value)")
            default: lines.append("\(key)=\(value)")
            }
        }
        var body: [UInt8] = []
        for line in lines { body += Array(line.utf8) + [0] }

        var message: [UInt8] = Array("libudev".utf8) + [0]
        func append(_ v: UInt32, bigEndian: Bool) {
            withUnsafeBytes(of: bigEndian ? v.bigEndian : v) { message += $0 }
        }
        // Magic and hashes in network order (the socket filter loads them big-endian); sizes native.
        append(magic, bigEndian: true)
        append(UInt32(headerSize), bigEndian: false)
        append(UInt32(headerSize), bigEndian: false)      // properties_off
        append(UInt32(body.count), bigEndian: false)      // properties_len
        append(murmurHash2(subsystem), bigEndian: true)   // filter_subsystem_hash
        append(devtype.map(murmurHash2) ?? 0, bigEndian: true)
        append(0, bigEndian: true)                         // filter_tag_bloom_hi
        append(0, bigEndian: true)                         // filter_tag_bloom_lo
        return message + body
    }

    /// Sends `message` to every monitor socket in `root`. A socket whose monitor has gone away
    /// (`ECONNREFUSED`) is removed, like umockdev does.
    static func deliver(_ message: [UInt8], toListenersIn root: String) throws {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        for name in names where name.hasPrefix("event") && name.dropFirst(5).allSatisfy(\.isNumber) && name.count > 5 {
            let path = root + "/" + name
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard fd >= 0 else { throw TestbedError(code: .ueventFailed, errno: errno, message: "socket(AF_UNIX) failed") }
            defer { close(fd) }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            let capacity = MemoryLayout.size(ofValue: addr.sun_path)
            guard path.utf8.count < capacity else {
                throw TestbedError(code: .ueventFailed, message: "socket path too long: \(path)")
            }
            withUnsafeMutableBytes(of: &addr.sun_path) { buf in
                buf.copyBytes(from: path.utf8)
                buf[path.utf8.count] = 0
            }
            let connected = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if connected < 0 {
                let e = errno
                if e == ECONNREFUSED { unlink(path); continue }
                throw TestbedError(code: .ueventFailed, errno: e, message: "cannot connect to monitor socket \(path)")
            }
            let sent = message.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            if sent < 0 {
                throw TestbedError(code: .ueventFailed, errno: errno, message: "cannot send uevent to \(path)")
            }
        }
    }

    /// MurmurHash2 as systemd uses it (`string_hash32`) for the monitor's in-kernel filter.
    static func murmurHash2(_ string: String) -> UInt32 {
        let data = Array(string.utf8)
        let m: UInt32 = 0x5bd1_e995
        var h = UInt32(truncatingIfNeeded: data.count)
        var i = 0
        while data.count - i >= 4 {
            var k = UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24
            k &*= m
            k ^= k >> 24
            k &*= m
            h &*= m
            h ^= k
            i += 4
        }
        switch data.count - i {
        case 3:
            h ^= UInt32(data[i + 2]) << 16
            fallthrough
        case 2:
            h ^= UInt32(data[i + 1]) << 8
            fallthrough
        case 1:
            h ^= UInt32(data[i])
            h &*= m
        default:
            break
        }
        h ^= h >> 13
        h &*= m
        h ^= h >> 15
        return h
    }
}
