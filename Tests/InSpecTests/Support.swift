import Foundation
import Testing
@testable import InSpec

/// The real reporter outputs copied verbatim from the inspec repository
/// (`test/fixtures/reporters/`, see shared/reference/SOURCES.md).
enum Fixture {
    static func data(_ name: String) throws -> Data {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures") else {
            Issue.record("fixture \(name).json missing from the test bundle")
            throw CocoaError(.fileNoSuchFile)
        }
        return try Data(contentsOf: url)
    }

    /// `json_output`: InSpec 1.49.2, profile long_commands, 4 controls (3 passed, 1 failed).
    static func jsonOutput() throws -> InSpecReport { try InSpecReport.decode(from: data("json_output")) }
    /// `json_merged_output`: InSpec 2.2.26, wrapper-override with `depends`, one skipped control.
    static func mergedOutput() throws -> InSpecReport { try InSpecReport.decode(from: data("json_merged_output")) }
    /// `json_min_output`: the json_output run with `--reporter json-min`.
    static func minOutput() throws -> InSpecMinReport { try InSpecMinReport.decode(from: data("json_min_output")) }

    // The control IDs of json_output, in report order.
    static let generated7 = "(generated from example.rb:7 871cd54043069c5c4f6e382fd5627830)"
    static let tmp = "tmp-1.0"
    static let generated21 = "(generated from example.rb:21 2ff474c5357e7070f4c3efa932032dcb)"
    static let runCommand = "(generated from run_command.rb:5 a411d4ded1530b2f48170840e1127584)"
    static let jsonOutputIDs = [generated7, tmp, generated21, runCommand]
}

/// Decodes a json report from a literal.
func report(_ json: String) throws -> InSpecReport { try InSpecReport.decode(from: Data(json.utf8)) }

/// Expects `body` to throw an `InSpecError` with `code`; returns it for further checks.
@discardableResult
func expectInSpecError(_ code: InSpecError.Code, sourceLocation: SourceLocation = #_sourceLocation,
                       _ body: () throws -> Void) -> InSpecError? {
    do {
        try body()
        Issue.record("expected InSpecError \(code), nothing was thrown", sourceLocation: sourceLocation)
    } catch let e as InSpecError {
        #expect(e.code == code, "\(e)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("expected InSpecError \(code), got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}
