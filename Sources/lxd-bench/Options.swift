import Foundation

/// Command-line options of `lxd-bench` (parsed by hand: the target depends only on LXD and Logging).
struct Options: Sendable {
    static let usage = """
        usage: lxd-bench --count N [--image ALIAS] [--rounds R] [--warmup W] [--margin FRACTION]
                         [--socket PATH] [--lxc PATH] [--json] [--verbose]
               lxd-bench delivery [--sizes LIST] [--rounds R] ...   (see lxd-bench delivery --help)

        Times create, start, exec, push (1 MiB), stop (forced) and delete of N containers, done
        sequentially once through LXDClient ("client") and once through the lxc CLI ("cli") per
        round. Rounds alternate the order (client,cli / cli,client / ...); the table shows the
        median over rounds of each phase's total and the ratio client/cli.

          --count N         containers per driver and round (required, 1...200)
          --image ALIAS     local image alias (default iotgw-busybox)
          --rounds R        measured rounds (default 3)
          --warmup W        untimed rounds of one container per driver before measuring (default 1)
          --margin F        noise margin: a phase fails when ratio > 1 + F (default 0.10) and the
                            95% bootstrap interval of the ratio lies above 1
          --socket PATH     LXD unix socket (default: LXD_SOCKET, LXD_DIR, snap, /var/lib/lxd)
          --lxc PATH        lxc binary (default: first lxc on PATH)
          --json            print the result as JSON instead of a table
          --verbose         log every request of the client at debug level (stderr)

        Exit status: 0 client not slower in any phase, 1 client slower in some phase,
        2 usage error, 3 benchmark failed (or another run holds /run/lock/lxd-bench.lock),
        130 interrupted. Containers are named t-bench-*; leftovers of that prefix are deleted at
        start and at exit, also after a failure or Ctrl-C.
        """

    var count = 0
    var rounds = 3
    var warmup = 1
    var common = CommonOptions()

    var image: String { common.image }
    var margin: Double { common.margin }
    var socket: String? { common.socket }
    var lxc: String? { common.lxc }
    var json: Bool { common.json }
    var verbose: Bool { common.verbose }
    var help: Bool { common.help }
}

/// Options both modes take; each mode's parser hands them to `parseCommon`.
struct CommonOptions: Sendable {
    var image = "iotgw-busybox"
    var margin = 0.10
    var socket: String?
    var lxc: String?
    var json = false
    var verbose = false
    var help = false

    /// Consumes `arg` (and its value, via `value`) if it is a common option; false if it is not.
    mutating func parseCommon(_ arg: String, _ value: (String) throws(UsageError) -> String) throws(UsageError) -> Bool {
        switch arg {
        case "--image": image = try value(arg)
        case "--margin":
            guard let m = Double(try value(arg)), m >= 0, m < 10 else {
                throw UsageError(message: "--margin needs a fraction >= 0 (0.10 = 10%)")
            }
            margin = m
        case "--socket": socket = try value(arg)
        case "--lxc": lxc = try value(arg)
        case "--json": json = true
        case "--verbose", "-v": verbose = true
        case "--help", "-h": help = true
        default: return false
        }
        return true
    }
}

struct UsageError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

extension Options {
    static func parse(_ args: [String]) throws(UsageError) -> Options {
        var options = Options()
        var rest = args[...]
        func value(_ flag: String) throws(UsageError) -> String {
            guard let v = rest.popFirst() else { throw UsageError(message: "\(flag) needs a value") }
            return v
        }
        func int(_ flag: String, _ range: ClosedRange<Int>) throws(UsageError) -> Int {
            guard let n = Int(try value(flag)), range.contains(n) else {
                throw UsageError(message: "\(flag) needs an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        var sawCount = false
        while let arg = rest.popFirst() {
            switch arg {
            case "--count": options.count = try int(arg, 1...200); sawCount = true
            case "--rounds": options.rounds = try int(arg, 1...50)
            case "--warmup": options.warmup = try int(arg, 0...10)
            default:
                guard try options.common.parseCommon(arg, value) else { throw UsageError(message: "unknown argument \(arg)") }
            }
        }
        if !sawCount && !options.help { throw UsageError(message: "--count is required") }
        return options
    }
}
