import ArgumentParser

/// The vendor's IoT daemon: answers gateways' announcements with signed provisioning plans.
@main
struct IoTDaemon: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iot-daemon",
        abstract: "The vendor's IoT daemon: verifies devices and answers gateways with signed provisioning plans.",
        subcommands: [
            InitCommand.self, ServeCommand.self, PublicKeyCommand.self,
            RegisterDeviceCommand.self, EnrollGatewayCommand.self,
            DevicesCommand.self, GatewaysCommand.self, ReportsCommand.self,
            PublishAppCommand.self, AppsCommand.self, UploadCookbooksCommand.self,
            RevokeGatewayCommand.self, WithdrawCommand.self, CommandCommand.self, LogsCommand.self,
            GroupCommand.self, RolloutCommand.self,
        ]
    )
}
