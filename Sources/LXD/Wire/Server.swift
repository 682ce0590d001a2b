/// `GET /1.0` (`definitions.Server`), the parts an orchestrator reads.
public struct Server: Sendable, Decodable {
    public struct Environment: Sendable, Decodable {
        public var serverVersion: String
        public var kernelVersion: String?
        public var storage: String?
        public var architectures: [String]?
        /// The LXD daemon's process id: a new one means LXD restarted.
        public var serverPID: Int?

        enum CodingKeys: String, CodingKey {
            case storage, architectures
            case serverPID = "server_pid"
            case serverVersion = "server_version"
            case kernelVersion = "kernel_version"
        }
    }

    public var apiExtensions: [String]
    public var apiStatus: String
    public var apiVersion: String
    public var auth: String
    public var environment: Environment?

    enum CodingKeys: String, CodingKey {
        case auth, environment
        case apiExtensions = "api_extensions"
        case apiStatus = "api_status"
        case apiVersion = "api_version"
    }
}
