import Testing
@testable import InSpec

@Suite("inspec exec exit codes (lib/inspec/ui.rb)")
struct ExitCodeTests {
    @Test("every documented value maps both ways", arguments: [
        (0, InSpecExitCode.normal), (100, .failedTests), (101, .skippedTests), (1, .usageError),
        (2, .pluginError), (3, .fatalDeprecation), (4, .gemDependencyLoadError), (5, .badSignature),
        (6, .signatureRequired), (130, .terminatedByCtrlC), (172, .licenseNotAccepted),
        (173, .licenseNotEntitled), (174, .licenseNotSet), (201, .gemDependencyNotFound),
    ])
    func known(_ raw: Int, _ code: InSpecExitCode) {
        #expect(InSpecExitCode(rawValue: raw) == code)
        #expect(code.rawValue == raw)
        if case .other = InSpecExitCode(rawValue: raw) { Issue.record("\(raw) mapped to .other") }
    }

    @Test("unknown values are kept", arguments: [7, 99, 102, 127, 137, 255, -1])
    func unknown(_ raw: Int) {
        let code = InSpecExitCode(rawValue: raw)
        #expect(code == .other(raw))
        #expect(code.rawValue == raw)
        #expect(!code.testsRan)
    }

    @Test("equality is by status: .other(100) is .failedTests")
    func equality() {
        #expect(InSpecExitCode.other(100) == .failedTests)
        #expect(Set([InSpecExitCode.other(0), .normal]).count == 1)
    }

    @Test("only 0, 100 and 101 mean the tests ran; 172-174 are license errors")
    func classes() {
        #expect([0, 100, 101].allSatisfy { InSpecExitCode(rawValue: $0).testsRan })
        #expect(![1, 2, 3, 4, 5, 6, 130, 172, 173, 174, 201].contains { InSpecExitCode(rawValue: $0).testsRan })
        #expect([172, 173, 174].allSatisfy { InSpecExitCode(rawValue: $0).isLicenseError })
        #expect(!InSpecExitCode.usageError.isLicenseError)
        #expect(InSpecExitCode.licenseNotAccepted.explanation.contains("--chef-license accept-silent"))
        #expect(InSpecExitCode.other(127).explanation.contains("command not found"))
        #expect(InSpecExitCode.failedTests.description == "100 (at least one control failed)")
    }
}
