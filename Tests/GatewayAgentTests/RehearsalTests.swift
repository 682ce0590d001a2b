import Foundation
import Testing
@testable import GatewayAgent

@Suite struct RehearsalTests {
    /// It runs through (every made-up answer still decodes, the plan is admitted, the store takes the steps), leaves
    /// no file behind, and clears one a crash left.
    @Test func aRehearsalRunsThroughAndLeavesNothingBehind() async throws {
        let dir = "/tmp/iotgw-rehearsal-\(UUID().uuidString.lowercased())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = Sample.config()
        config.stateDirectory = dir
        // What a crash in the middle of one left.
        try Data("left over".utf8).write(to: URL(fileURLWithPath: "\(dir)/\(Rehearsal.fileName)-wal"))
        try await Rehearsal.perform(config: config)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == [])
    }
}
