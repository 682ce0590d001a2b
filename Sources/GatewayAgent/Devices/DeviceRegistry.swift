import Foundation
import Synchronization

/// A character device's number (`major:minor`), as the kernel assigns it to a plugged device.
public struct DeviceNumber: Sendable, Hashable, Codable, CustomStringConvertible {
    public var major: UInt32
    public var minor: UInt32

    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    public var description: String { "\(major):\(minor)" }

    /// The number of the character device at `path` now, or nil if it is not a character device.
    public static func of(path: String) -> DeviceNumber? {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFCHR else { return nil }
        return DeviceNumber(rdev: st.st_rdev)
    }

    init(rdev: dev_t) {
        major = UInt32(truncatingIfNeeded: (rdev >> 8) & 0xfff | ((rdev >> 32) & ~0xfff))
        minor = UInt32(truncatingIfNeeded: (rdev & 0xff) | ((rdev >> 12) & ~0xff))
    }

    var rdev: dev_t {
        let ma = dev_t(major), mi = dev_t(minor)
        return ((ma & 0xfffff000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffffff00) << 12) | (mi & 0xff)
    }

    /// From udev's `MAJOR`/`MINOR` properties.
    public init?(major: String?, minor: String?) {
        guard let major, let minor, let ma = UInt32(major), let mi = UInt32(minor) else { return nil }
        self.init(major: ma, minor: mi)
    }
}

/// A device node the gateway makes for one plugged, approved device, under its own root-only
/// directory. LXD passes the node at this path into the vendor's container (`unix-char`,
/// `required=false`, so LXD adds and removes it as the node comes and goes).
///
/// Why not the kernel's name (`/dev/ttyUSB0`): the kernel reuses names and numbers, so a device LXD
/// knows by kernel name can be replaced, between an unplug and its detach, by another vendor's device
/// at the same name. The gateway's node exists only while the very device it was made for (its udev
/// syspath and device number, checked against the serial and USB IDs) is plugged in; it is removed the
/// moment udev reports the unplug, before any other work.
public struct ManagedNode: Sendable, Hashable {
    /// `<directory>/<vendor>/<device name>`.
    public var path: String
    /// The udev device it stands for.
    public var syspath: String
    public var number: DeviceNumber

    public init(path: String, syspath: String, number: DeviceNumber) {
        self.path = path
        self.syspath = syspath
        self.number = number
    }
}

/// Where the registry's nodes live: the real file system (`mknod`, needs root), or memory in tests.
public protocol DeviceNodeFiles: Sendable {
    /// Creates the directory (mode 0700) and its parents.
    func prepare(directory: String) throws
    /// Makes a character node (replacing whatever is at `path`), mode 0600.
    func make(path: String, number: DeviceNumber) throws
    func remove(path: String)
    /// The number of the character node at `path`, nil if there is none.
    func number(at path: String) -> DeviceNumber?
    /// Entries of a directory (names), empty if it does not exist.
    func list(_ directory: String) -> [String]
}

/// Nodes on the real file system.
public struct PosixDeviceNodeFiles: DeviceNodeFiles {
    public init() {}

    public func prepare(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard chmod(directory, 0o700) == 0 else { throw GatewayError(.deviceNode, "cannot restrict \(directory) to root (errno \(errno))") }
    }

    public func make(path: String, number: DeviceNumber) throws {
        unlink(path)
        guard mknod(path, S_IFCHR | 0o600, number.rdev) == 0 else {
            throw GatewayError(.deviceNode, "cannot make node \(path) for \(number) (errno \(errno))")
        }
    }

    public func remove(path: String) { unlink(path) }
    public func number(at path: String) -> DeviceNumber? { DeviceNumber.of(path: path) }
    public func list(_ directory: String) -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] }
}

/// The gateway's view of which device nodes are plugged in now, shared by every vendor worker, and
/// the nodes it made for them. All changes to nodes happen under one lock, so a node is never made
/// for a device that is being unplugged.
public final class DeviceRegistry: Sendable {
    /// Root-only directory holding one subdirectory of nodes per vendor.
    public let directory: String
    let files: any DeviceNodeFiles

    struct State {
        /// Plugged udev devices with a node: syspath → device number.
        var plugged: [String: DeviceNumber] = [:]
        /// Nodes made (or adopted) for plugged devices: path → node.
        var nodes: [String: ManagedNode] = [:]
    }

    let state = Mutex(State())

    public init(directory: String, files: any DeviceNodeFiles = PosixDeviceNodeFiles()) {
        self.directory = directory
        self.files = files
    }

    /// Creates the directory, mode 0700 (LXD runs as root and reads it; nobody else may).
    public func prepare() throws { try files.prepare(directory: directory) }

    /// The path of a vendor's node for an LXD device name (both are derived, never vendor-chosen).
    public func path(vendor: String, device: String) -> String { "\(directory)/\(vendor)/\(device)" }

    /// The number of a plugged udev device, nil if it is not plugged in (or has no node).
    public func number(syspath: String) -> DeviceNumber? { state.withLock { $0.plugged[syspath] } }

    /// udev reported a device with a node (or its number changed).
    public func plugged(syspath: String, number: DeviceNumber) {
        state.withLock { s in
            if let old = s.plugged[syspath], old != number {
                for p in s.removeNodes(forSyspath: syspath) { files.remove(path: p) }
            }
            s.plugged[syspath] = number
        }
    }

    /// udev reported an unplug: every node made for it goes now. Returns the paths removed.
    @discardableResult
    public func unplugged(syspath: String) -> [String] {
        state.withLock { s in
            s.plugged[syspath] = nil
            let gone = s.removeNodes(forSyspath: syspath)
            // Removed under the lock: an `ensure` for this syspath cannot run in between.
            for p in gone { files.remove(path: p) }
            return gone
        }
    }

    /// After start-up enumeration: keeps a node file left from before only if it stands for a device
    /// that is plugged in now with the same number and the same (vendor, device name); removes every
    /// other file. `expected` maps node paths to the syspaths (a device's tty and usb node) they may stand for.
    public func sweep(expected: [String: Set<String>]) {
        state.withLock { s in
            for (path, number) in nodeFiles() {
                if let syspath = expected[path]?.sorted().first(where: { s.plugged[$0] == number }) {
                    s.nodes[path] = ManagedNode(path: path, syspath: syspath, number: number)
                } else {
                    s.nodes[path] = nil
                    files.remove(path: path)
                }
            }
        }
    }

    /// The node files of a vendor on disk now: path → device number.
    public func nodes(vendor: String) -> [String: DeviceNumber] {
        state.withLock { _ in nodeFiles(in: "\(directory)/\(vendor)") }
    }

    /// Makes (or keeps) `node`, only if its device is plugged in with that number right now.
    public func ensure(_ node: ManagedNode) throws {
        try state.withLock { s in
            guard s.plugged[node.syspath] == node.number else {
                throw GatewayError(.deviceNode, "device \(node.syspath) is no longer plugged in as \(node.number)")
            }
            if files.number(at: node.path) != node.number {
                try files.prepare(directory: (node.path as NSString).deletingLastPathComponent)
                try files.make(path: node.path, number: node.number)
            }
            s.nodes[node.path] = node
        }
    }

    /// Removes a node (a device no longer granted, or no longer wanted in the container).
    public func remove(path: String) {
        state.withLock { s in
            s.nodes[path] = nil
            files.remove(path: path)
        }
    }

    func nodeFiles() -> [String: DeviceNumber] {
        var out: [String: DeviceNumber] = [:]
        for vendor in files.list(directory) { out.merge(nodeFiles(in: "\(directory)/\(vendor)")) { a, _ in a } }
        return out
    }

    func nodeFiles(in dir: String) -> [String: DeviceNumber] {
        var out: [String: DeviceNumber] = [:]
        for name in files.list(dir) {
            let path = "\(dir)/\(name)"
            if let n = files.number(at: path) { out[path] = n } else { files.remove(path: path) }
        }
        return out
    }
}

extension DeviceRegistry.State {
    mutating func removeNodes(forSyspath syspath: String) -> [String] {
        let paths = nodes.values.filter { $0.syspath == syspath }.map(\.path)
        for p in paths { nodes[p] = nil }
        return paths
    }
}
