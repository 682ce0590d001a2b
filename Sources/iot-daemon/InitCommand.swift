import ArgumentParser
import GatewayProtocol
import VendorService

/// Creates the signing key and the database; prints the public key. Safe to run again.
struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create the signing key (if missing) and the database, then print the vendor public key.",
        discussion: "Gateway owners put the printed key in their gateway configuration. Running init again prints the same key."
    )

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let configuration = try options.load()
        let (signer, created) = try SigningKeyFile.loadOrCreate(path: configuration.signingKey)
        try await withVendorStore(configuration, create: true, logger: quietLogger) { _ in }
        if created {
            printError("created signing key \(configuration.signingKey)")
        }
        printError("database \(storeDescription(configuration)) is ready")
        print(Keys.encode(signer.publicKey))
    }
}

/// The vendor public key gateways verify plans with.
struct PublicKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "public-key", abstract: "Print the vendor public key (base64).")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let configuration = try options.load()
        print(Keys.encode(try SigningKeyFile.load(path: configuration.signingKey).publicKey))
    }
}
