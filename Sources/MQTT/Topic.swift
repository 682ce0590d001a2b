import CMosquitto

/// Checks of topic names and filters, done with libmosquitto's own rules before anything is sent.
enum Topic {
    /// A topic name one may publish to: non-empty, valid MQTT UTF-8, no `+` or `#`, at most 65535 bytes.
    static func checkName(_ topic: String) throws {
        guard !topic.isEmpty else { throw MQTTError(code: .invalidArgument, message: "the topic is empty") }
        try checkString(topic, what: "topic")
        guard mosquitto_pub_topic_check(topic) == MOSQ_ERR_SUCCESS.code else {
            throw MQTTError(code: .invalidArgument, message: "\(topic.debugDescription) is not a topic one can publish to (no + or # wildcards)")
        }
    }

    /// A subscription filter: non-empty, valid MQTT UTF-8, `+` only as a whole level, `#` only as the
    /// whole last level, at most 65535 bytes.
    static func checkFilter(_ filter: String) throws {
        guard !filter.isEmpty else { throw MQTTError(code: .invalidArgument, message: "the topic filter is empty") }
        try checkString(filter, what: "topic filter")
        guard mosquitto_sub_topic_check(filter) == MOSQ_ERR_SUCCESS.code else {
            throw MQTTError(code: .invalidArgument, message: "\(filter.debugDescription) is not a valid topic filter (+ and # must fill a whole level, # only at the end)")
        }
    }

    /// An MQTT string (client id, topic, username): at most 65535 bytes of UTF-8 that MQTT allows
    /// (no U+0000, no control characters).
    /// The first libmosquitto call of every check (names and filters pass here before their own): it loads the library.
    static func checkString(_ string: String, what: String) throws {
        try libmosquittoInitialised()
        let count = string.utf8.count
        guard count <= 65535 else {
            throw MQTTError(code: .invalidArgument, message: "the \(what) is \(count) bytes; MQTT allows at most 65535")
        }
        let valid = string.withCString { mosquitto_validate_utf8($0, Int32(count)) }
        guard valid == MOSQ_ERR_SUCCESS.code else {
            throw MQTTError(code: .invalidArgument, message: "the \(what) \(string.debugDescription) contains characters MQTT does not allow")
        }
    }
}

extension mosq_err_t {
    /// The value libmosquitto functions return for this error.
    var code: Int32 { Int32(rawValue) }
}
