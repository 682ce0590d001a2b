import Foundation
import Testing
@testable import GatewayProtocol

/// Hostile strings every rule must refuse: control characters, escape sequences, bidi overrides, NUL,
/// newlines, traversal and option-like values.
let hostileStrings = [
    "", "\u{0}", "a\u{0}", "a\u{1B}[2J", "\u{1B}]0;owned\u{07}", "a\nb", "a\rb", "a\tb", "a\u{7F}", "a\u{85}", "a\u{202E}b", "a\u{2066}b",
    "a\u{200B}b", "a\u{2028}b", "a\u{FEFF}", "a b", "../a", "a/../b", "-a", "--a", "a\\b", "a;b", "a$(b)", "a`b`", "a\"b", "a'b",
]

@Suite("Fields")
struct FieldsTests {
    static func expectRule(_ rule: FieldRule, accepts good: [String], refuses bad: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        for value in good {
            #expect(rule.isValid(value), "\(rule.what) should accept \(value.debugDescription)", sourceLocation: sourceLocation)
            #expect(throws: Never.self, sourceLocation: sourceLocation) { try rule.check(value, at: "f") }
        }
        for value in bad {
            #expect(!rule.isValid(value), "\(rule.what) should refuse \(value.debugDescription)", sourceLocation: sourceLocation)
            let error = #expect(throws: ProtocolError.self, sourceLocation: sourceLocation) { try rule.check(value, at: "x.y") }
            #expect(error?.code == .invalidField, sourceLocation: sourceLocation)
            // The message names the field and shows the value only escaped.
            #expect(error?.message.hasPrefix("x.y: ") == true, sourceLocation: sourceLocation)
            #expect(error.map { Fields.isShowable($0.message, max: 1024) } == true, "\(error?.message.debugDescription ?? "")",
                    sourceLocation: sourceLocation)
        }
    }

    @Test func vendorID() {
        Self.expectRule(Fields.vendorID, accepts: ["acme", "a", "a-9", "globex2", "a" + String(repeating: "b", count: 30)],
                        refuses: hostileStrings + ["Acme", "1acme", "ac_me", "acme-", "ac.me", "a" + String(repeating: "b", count: 31)])
    }

    @Test func gatewayID() {
        let id = GatewayIdentity(key: .init()).id
        Self.expectRule(Fields.gatewayID, accepts: ["gw-0123456789abcdef", id],
                        refuses: hostileStrings + ["gw-0123456789ABCDEF", "gw-0123456789abcde", "gw-0123456789abcdef0", "gw-0123456789abcdeg",
                                                   "xx-0123456789abcdef", "gw-0123456789abcdef\n", "gw_0123456789abcdef"])
    }

    @Test func usbID() {
        Self.expectRule(Fields.usbID, accepts: ["0403", "ea60", "ffff", "0000"],
                        refuses: hostileStrings + ["EA60", "04o3", "403", "04030", "0x03", "04 3"])
    }

    @Test func serial() {
        Self.expectRule(Fields.serial, accepts: ["FT1234", "A", "0", "a.b:c+d_e-f", "FT-1.2:3+4_5", String(repeating: "S", count: 64)],
                        refuses: hostileStrings + [".", "..", ".hidden", "-rf", "_x", "FT 1", "FT/1", "FT\u{1B}[2J", "Ünï",
                                                   String(repeating: "S", count: 65), "FT1\n"])
    }

    @Test func name() {
        Self.expectRule(Fields.name, accepts: ["thermo-agent", "a.b_c-1", "iotgw-debian12", "A", String(repeating: "n", count: 64)],
                        refuses: hostileStrings + [".", "..", ".x", "-x", "_x", "a/b", "a:b", "a+b", String(repeating: "n", count: 65)])
    }

    @Test func version() {
        Self.expectRule(Fields.version, accepts: ["1.0.0", "1", "2.1.0+build~rc_1-2", String(repeating: "9", count: 64)],
                        refuses: hostileStrings + ["1 0", ".1", "~1", "+1", "1.0/2", "1.0:2", String(repeating: "9", count: 65)])
    }

    @Test func sha256() {
        let good = String(repeating: "ab", count: 32)
        Self.expectRule(Fields.sha256, accepts: [good, String(repeating: "0", count: 64)],
                        refuses: hostileStrings + [good.uppercased(), String(good.dropLast()), good + "a", String(repeating: "g", count: 64)])
    }

    @Test func runListItem() {
        Self.expectRule(Fields.runListItem,
                        accepts: ["recipe[x]", "recipe[thermo_agent]", "recipe[thermo_agent::default]", "recipe[thermo_agent@1.2.3]",
                                  "recipe[a::b@1]", "recipe[a.b-c]", "role[web]", "role[web_1.x]", "recipe[x@123456789.0.1]",
                                  "recipe[" + String(repeating: "x", count: 64) + "::" + String(repeating: "y", count: 64) + "]"],
                        refuses: hostileStrings + ["thermo_agent", "recipe[]", "recipe[x", "recipe[x] ", " recipe[x]", "role[a[b]]", "recipe[../x]",
                                                   "recipe[-x]", "recipe[.x]", "recipe[x@1.2.3.4]", "recipe[x@v1]", "recipe[x\n]", "recipe[x]\u{1B}",
                                                   "recipe[x y]", "role[x::y]", "RECIPE[x]", "recipe[" + String(repeating: "x", count: 65) + "]",
                                                   "recipe[x@]", "recipe[x@1.]", "recipe[x@1234567890]", "recipe[x::]", "recipe[x:y]", "role[]",
                                                   "role[x@1]", "recipe[x]]", "recipe[[x]"])
    }

    @Test func nodeName() {
        Self.expectRule(Fields.nodeName, accepts: ["gw-0123456789abcdef-acme", "n", String(repeating: "n", count: 128)],
                        refuses: hostileStrings + [".", "..", "-x", "a b", "a/b", String(repeating: "n", count: 129)])
    }

    @Test func variableName() {
        Self.expectRule(Fields.variableName, accepts: ["app_version", "_x", "A9", "sensor_agent_version", String(repeating: "v", count: 64)],
                        refuses: hostileStrings + ["9a", "a-b", "a.b", "a b", String(repeating: "v", count: 65)])
    }

    @Test func shortValue() {
        Self.expectRule(Fields.shortValue, accepts: ["1.0.0", "hello world ~", " ", "a'b\"c$(d)", String(repeating: "v", count: 256)],
                        refuses: ["", "\u{0}", "a\u{1B}[2J", "a\nb", "a\tb", "a\u{7F}", "a\u{202E}", "é", String(repeating: "v", count: 257)])
    }

    @Test func address() {
        Self.expectRule(Fields.address, accepts: ["10.0.3.17", "fd42::1", "FD42:AB::1", "::1"],
                        refuses: hostileStrings + ["10.0.3.17; rm", "a.b.c.g", "fe80::1%eth0", "10.0.3.17/24", String(repeating: "1", count: 46)])
    }

    @Test func nonce() {
        Self.expectRule(Fields.nonce, accepts: ["abcdefghijklmnop", "A-_0123456789abcdef", String(repeating: "n", count: 64), RequestSignature.makeNonce()],
                        refuses: hostileStrings + ["abcdefghijklmno", String(repeating: "n", count: 65), "abcdefghijklmnop+/",
                                                   "abcdefghijklmnop=", "abcdefghijklmnop\n", "abcdefghijklmnop.."])
    }

    @Test func host() {
        Self.expectRule(Fields.host, accepts: ["iot.acme.example", "localhost", "10.0.3.1", "a-b.c", "x", "1a.b2", String(repeating: "a", count: 63) + ".b"],
                        refuses: hostileStrings + ["Iot.acme", "iot.acme:8470", "iot..acme", ".iot", "iot.", "-iot", "iot-", "iot-.acme", "[::1]",
                                                   "::1", "iot_acme", "iot.acme\n", "user@iot", String(repeating: "a", count: 64) + ".b",
                                                   Array(repeating: "abcdefghi", count: 26).joined(separator: ".")])
    }

    @Test func containerDevicePath() {
        Self.expectRule(Fields.containerDevicePath,
                        accepts: ["/dev/ttyUSB0", "/dev/ttyACM0", "/dev/serial/by-id/usb-FTDI_1", "/dev/ttyUSB0-A_1-2", "/dev/a/b/c/d",
                                  "/dev/ttyS0", "/dev/tty0x", "/dev/nullx", "/dev/" + String(repeating: "t", count: 64)],
                        refuses: hostileStrings + ["/dev/", "/dev", "/etc/shadow", "dev/ttyUSB0", "/dev/../etc/shadow", "/dev/./x", "/dev/.x", "/dev/..",
                                                   "/dev//x", "/dev/x/", "/dev/-x", "/dev/a/b/c/d/e", "/dev/x\n", "/dev/x\u{1B}", "/dev/x y",
                                                   "/dev/" + String(repeating: "t", count: 65),
                                                   "/dev/" + Array(repeating: String(repeating: "t", count: 40), count: 4).joined(separator: "/")]
                            + Fields.reservedDevicePaths.filter { !$0.contains("/.") } + ["/dev/pts/0", "/dev/net/tun", "/dev/fd/0", "/dev/shm/x"])
    }

    @Test func url() {
        Self.expectRule(Fields.url,
                        accepts: ["http://127.0.0.1:4545", "https://chef.example/organizations/acme", "http://chef.example", "https://a.b/c?d=e#f"],
                        refuses: hostileStrings + ["ftp://chef.example", "http://", "https://", "http://user:pw@chef.example", "http://chef.example@evil",
                                                   "https://chef.example/\u{1B}", "http://a b", "javascript:alert(1)", "http:/x", "//chef.example",
                                                   "file:///etc/passwd", "http://chef.example/\\x", "https://" + String(repeating: "a", count: 250)])
    }

    static let pemBody = "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ=="

    @Test func pem() {
        let block = "-----BEGIN RSA PRIVATE KEY-----\n\(Self.pemBody)\n-----END RSA PRIVATE KEY-----\n"
        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,ABCDEF\n\n\(Self.pemBody)\n-----END RSA PRIVATE KEY-----"
        Self.expectRule(Fields.pem,
                        accepts: [block, block.replacingOccurrences(of: "\n", with: "\r\n"), encrypted,
                                  "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"],
                        refuses: hostileStrings + [
                            "not a pem", "-----BEGIN X-----\n-----END X-----", "-----BEGIN X-----\nAAAA\n",
                            "-----begin x-----\nAAAA\n-----end x-----", "-----BEGIN X-----\n$(rm -rf /)\n-----END X-----",
                            "-----BEGIN X-----\nAA\u{1B}[2JAA\n-----END X-----", "-----BEGIN X-----\nAAAA\n-----END X-----\n\u{1B}[2J",
                            "-----BEGIN X-----\nAAAA\n-----END X-----\n-----BEGIN Y-----\nAAAA\n-----END Y-----",
                            "-----BEGIN X-----\n" + String(repeating: "A", count: 16 * 1024) + "\n-----END X-----",
                        ])
    }

    // MARK: Showing untrusted text

    @Test func escapedShowsEveryControlCharacterAsText() {
        #expect(Fields.escaped("a\u{1B}[2Jb") == "a\\u{1B}[2Jb")
        #expect(Fields.escaped("a\nb\rc\td") == "a\\nb\\rc\\td")
        #expect(Fields.escaped("txt\u{202E}exe") == "txt\\u{202E}exe")
        #expect(Fields.escaped("a\u{0}b") == "a\\u{0}b")
        #expect(Fields.escaped("\u{7F}\u{85}\u{200B}\u{2028}\u{2066}\u{FEFF}\u{E000}")
            == "\\u{7F}\\u{85}\\u{200B}\\u{2028}\\u{2066}\\u{FEFF}\\u{E000}")
        #expect(Fields.escaped("Société 日本 ok") == "Société 日本 ok")
        for hostile in hostileStrings { #expect(Fields.isShowable(Fields.escaped(hostile), max: 1024), "\(hostile.debugDescription)") }
    }

    @Test func escapedCutsWithAnEllipsis() {
        #expect(Fields.escaped("abcdef", max: 3) == "abc…")
        #expect(Fields.escaped("abc", max: 3) == "abc")
        #expect(Fields.escaped("", max: 3) == "")
        // The cut counts characters of the input; an escape counts as one.
        #expect(Fields.escaped("\u{1B}\u{1B}\u{1B}\u{1B}", max: 2) == "\\u{1B}\\u{1B}…")
        #expect(Fields.escaped(String(repeating: "x", count: 5000)).count == 4097)
        #expect(Fields.displayText(String(repeating: "x", count: 600)) == String(repeating: "x", count: 512) + "…")
    }

    @Test func quoteEscapesAndCutsAt64() {
        #expect(Fields.quote("x\u{1B}") == "\"x\\u{1B}\"")
        #expect(Fields.quote(String(repeating: "q", count: 100)) == "\"" + String(repeating: "q", count: 64) + "…\"")
    }

    @Test func showable() {
        #expect(Fields.isShowable("Thermo Sensor™", max: 128))
        #expect(Fields.isShowable("", max: 0))
        #expect(!Fields.isShowable("abc", max: 2))
        for hostile in ["a\u{1B}", "a\n", "a\u{202E}", "a\u{0}", "a\u{7F}", "a\u{9B}"] { #expect(!Fields.isShowable(hostile, max: 128)) }
    }

    @Test func namedRulesNameTheFieldInMessages() {
        let error = #expect(throws: ProtocolError.self) { try Fields.name.named("app name").check("-x", at: "apps[0].name") }
        #expect(error?.message == "apps[0].name: app name \"-x\" must be \(Fields.name.form)")
    }
}
