import Logging
import ServiceLifecycle
import Udev

/// Feeds udev's view of the world to the agent: devices present at start, then hotplug events.
public struct DeviceWatcher: Service {
    let agent: GatewayAgent
    let logger: Logger

    public init(agent: GatewayAgent, logger: Logger) {
        self.agent = agent
        self.logger = logger
    }

    public func run() async throws {
        // Monitor first, then enumerate: a device plugged in between is seen (twice, harmlessly), never missed.
        let monitor = try UdevMonitor(subsystems: agent.config.subsystems, logger: logger)
        let existing = try Udev.enumerate(subsystems: agent.config.subsystems).filter(Self.isEndDevice)
        for d in existing { agent.submit(.added(Self.plugged(d))) }
        agent.submit(.sweep(present: Set(existing.map(\.syspath))))
        logger.info("watching udev", metadata: ["udev.subsystems": "\(agent.config.subsystems)", "udev.present": "\(existing.count)"])
        for try await event in monitor.events().cancelOnGracefulShutdown() where Self.isEndDevice(event) || event.action == "remove" {
            switch event.action {
            case "add":
                agent.submit(.added(Self.plugged(event)))
            case "remove":
                agent.submit(.removed(syspath: event.syspath))
            default:
                continue
            }
        }
    }

    /// USB-backed devices only: consoles and other ttys without a USB identity are not end devices.
    static func isEndDevice(_ d: UdevDevice) -> Bool {
        d.vendorID != nil && d.productID != nil && (d.subsystem != "usb" || d.isUSBDevice)
    }

    static func plugged(_ d: UdevDevice) -> PluggedDevice {
        PluggedDevice(syspath: d.syspath, subsystem: d.subsystem ?? "", devnode: d.devnode, vendorID: d.vendorID, productID: d.productID,
                      serial: d.serial, manufacturer: d.manufacturer, product: d.product, busPath: d.busPath,
                      number: DeviceNumber(major: d.properties["MAJOR"], minor: d.properties["MINOR"]) ?? d.devnode.flatMap(DeviceNumber.of(path:)))
    }
}
