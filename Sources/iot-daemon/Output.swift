import ArgumentParser
import Foundation
import GatewayProtocol
import Logging

/// Status lines go to standard error, so standard output carries only the result (a key, a listing).
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// For commands that print their own output: log messages of level warning and above go to standard
/// error, beside the status lines. Returns the command's logger.
func warningsToStandardError() -> Logger {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .warning
        return handler
    }
    return Logger(label: "iot-daemon")
}

/// Prints values as an indented JSON array (WireJSON: sorted keys, ISO-8601 dates).
func printJSON(_ value: some Encodable) throws {
    let encoder = WireJSON.encoder()
    encoder.outputFormatting.insert(.prettyPrinted)
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Prints rows as left-aligned columns under a header.
func printTable(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0.indices.contains(i) ? $0[i].count : 0 }.max() ?? 0 }
    for row in all {
        let cells = row.enumerated().map { i, cell in
            i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "  "))
    }
}

extension Date {
    var iso8601: String { ISO8601DateFormatter().string(from: self) }
}

/// Refuses input that only the configuration or the database can judge (after `validate()`): prints the
/// reason like argument-parser does and exits with the same status as a `ValidationError`, without the
/// usage text, which would not help.
func refusal(_ message: String) -> ExitCode {
    printError("Error: \(message)")
    return .validationFailure
}
