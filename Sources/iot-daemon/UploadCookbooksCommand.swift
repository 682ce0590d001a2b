import ArgumentParser
import Chef
import Foundation
import Logging
import VendorService

/// Uploads the vendor's cookbooks to the Chef server of the configuration's `chef` section, like
/// `knife cookbook upload --all`.
struct UploadCookbooksCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upload-cookbooks",
        abstract: "Upload the cookbooks in a folder to the configuration's Chef server.",
        discussion: """
            Every subfolder of --dir with a metadata.rb is a cookbook (others are skipped). metadata.rb is read \
            without Ruby: only `key 'value'` lines (name, version, description, maintainer, license, depends, \
            supports, ...) and comments; anything else is refused with its file and line before anything is \
            uploaded. Files the server already has are not sent again, so running it twice uploads nothing new. \
            A version frozen on the server is left alone if its files are unchanged and refused if they differ.
            """
    )

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: OutputOptions

    @Option(name: .long, help: "The folder holding one subfolder per cookbook.")
    var dir = "cookbooks"

    @Flag(name: .long, help: "Freeze the uploaded versions (changing one later needs a new version).")
    var freeze = false

    func run() async throws {
        let configuration = try options.load()
        guard let settings = configuration.chef else {
            throw refusal("\(options.config) has no chef: section (serverURL, adminName, adminKey): there is no Chef server to upload to")
        }
        let cookbooks: [LocalCookbook]
        do { cookbooks = try LocalCookbook.discover(in: dir) } catch let error as CookbookSourceError {
            throw refusal(error.description)
        }
        guard !cookbooks.isEmpty else { throw refusal("no cookbooks in \(dir): no subfolder has a metadata.rb") }

        let logger = warningsToStandardError()
        let chef: ChefClient
        do { chef = try settings.adminClient(logger: logger) } catch var error as ConfigurationError {
            error.path = options.config
            throw error
        }

        var reports: [CookbookUploadReport] = []
        for cookbook in cookbooks {
            let report: CookbookUploadReport
            do { report = try await cookbook.upload(to: chef, freeze: freeze) } catch {
                printError("Error: \(cookbook.metadata.name) \(cookbook.metadata.version) (\(cookbook.directory)) to \(settings.serverURL): \(error)")
                throw ExitCode.failure
            }
            printError("\(report.name) \(report.version): " + Self.summary(report))
            reports.append(report)
        }
        if output.json { return try printJSON(reports) }
        printTable(["COOKBOOK", "VERSION", "FILES", "UPLOADED", "ALREADY PRESENT", "FROZEN"], reports.map { r in
            [r.name, r.version, "\(r.files)", "\(r.uploaded.count)", "\(r.alreadyPresent.count)", r.frozen ? "yes" : "no"]
        })
    }

    static func summary(_ r: CookbookUploadReport) -> String {
        switch r.outcome {
        case .frozenUnchanged:
            return "frozen on the server with the same \(r.files) files, nothing sent"
        case .uploaded:
            return "\(r.uploaded.count) of \(r.files) files uploaded, \(r.alreadyPresent.count) already present"
                + (r.frozen ? ", frozen" : "")
        }
    }
}
