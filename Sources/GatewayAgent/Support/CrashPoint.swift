import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Fault injection for the crash-point sweep: with `IOTGW_CRASH_AFTER=<point>` in its environment the
/// daemon exits abruptly (`_exit`, status ``exitStatus``: no cleanup, no flush, as a power cut or a
/// SIGKILL leaves it) right after the named step became durable. Without the variable nothing happens.
///
/// The points, in the order a provisioning and delivery passes them (``all``):
/// - `plan-recorded`: a validated plan is stored (pending or covered);
/// - `approval-decided`: the owner's decision is stored;
/// - `step:<kind>`: a provisioning step is journaled done (`verify-image`, `ensure-node`, `create`,
///   `update-config`, `set-device`, `start`, `attach`, `detach`, `remove-node`);
/// - `result-recorded`: the applied plan version is stored;
/// - `delivery:<phase>`: a delivery phase is journaled, before it runs (`snapshotting`, `converging`,
///   `committing`, `restoring`);
/// - `delivery-finished`: a delivery's outcome is stored and its transaction dropped.
///
/// A rebuild on a new image passes ``rebuild`` instead: `rebuild:<phase>` (its phase is stored, before
/// it runs: `creating`, `delivering`, `switching`, `failed`), `rebuild:old-renamed` (the old container is
/// stopped, without devices, renamed `-prev`) and `rebuild-finished`.
public enum CrashPoint {
    public static let environmentVariable = "IOTGW_CRASH_AFTER"
    public static let exitStatus: Int32 = 86

    public static let all = [
        "plan-recorded", "approval-decided", "step:verify-image", "step:ensure-node", "step:create", "step:update-config",
        "step:set-device", "step:start", "step:attach", "result-recorded", "delivery:snapshotting", "delivery:converging",
        "delivery:committing", "delivery:restoring", "delivery-finished", "step:detach", "step:remove-node",
    ]

    /// The points only a rebuild passes, in order (kept out of ``all``: no other scenario reaches them).
    public static let rebuild = ["rebuild:creating", "rebuild:delivering", "rebuild:switching", "rebuild:old-renamed", "rebuild-finished"]

    /// Read once: the point this process dies at, if any.
    static let target: String? = {
        guard let raw = getenv(environmentVariable) else { return nil }
        let value = String(cString: raw)
        return value.isEmpty ? nil : value
    }()

    /// Set while the daemon rehearses a provisioning on made-up data and a store of its own (``Rehearsal``): it
    /// passes the same store code, but no point is reached there (nor held at, see ``pause(_:)``).
    @TaskLocal public static var rehearsing = false

    /// Exits at once when `point` is the configured one.
    public static func reached(_ point: @autoclosure () -> String) {
        guard let target, !rehearsing, target == point() else { return }
        let line = "iot-gateway-client: crash point \(target) reached, exiting abruptly\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        _exit(exitStatus)
    }
}

extension CrashPoint {
    /// With `IOTGW_PAUSE_AT=<point>`, the daemon holds at that point the first time it reaches it, so a
    /// test can change the world at a known moment (kill LXD, say): it creates the file named by
    /// `IOTGW_PAUSE_FILE`, logs, and goes on when the file is removed. Points are those of ``all``
    /// (reached after the step became durable) and `before:step:<kind>` (the step is journaled started,
    /// nothing sent yet). Without the variables nothing happens.
    public static let pauseVariable = "IOTGW_PAUSE_AT"
    public static let pauseFileVariable = "IOTGW_PAUSE_FILE"

    static let pauseTarget: (point: String, file: String)? = {
        guard let p = getenv(pauseVariable), let f = getenv(pauseFileVariable) else { return nil }
        let (point, file) = (String(cString: p), String(cString: f))
        return point.isEmpty || file.isEmpty ? nil : (point, file)
    }()

    static let pausedOnce = Mutex(false)

    /// Holds at `point` when it is the configured one (once per process).
    public static func pause(_ point: @autoclosure () -> String) async {
        guard let target = pauseTarget, !rehearsing, target.point == point() else { return }
        guard pausedOnce.withLock({ done in defer { done = true }; return !done }) else { return }
        let fd = creat(target.file, 0o600)
        if fd >= 0 { close(fd) }
        let line = "iot-gateway-client: pause point \(target.point) reached, waiting for \(target.file) to go\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        while access(target.file, F_OK) == 0 {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
