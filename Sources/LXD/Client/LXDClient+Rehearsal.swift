import Foundation
import NIOCore

extension LXDClient {
    /// Decodes, on made-up answers, every LXD response a first provisioning reads (an async operation and its
    /// end, the storage pool and its space, an image alias, instances, an instance's state, an event) and
    /// encodes the requests it writes (`create`, and a start), through the same decoding and encoding as real calls.
    /// Nothing is sent: it only makes the process resolve, once, the types and conformances those codings
    /// need (see the gateway's `Rehearsal`). Throws if a made-up answer no longer decodes.
    public static func rehearseCoding(creating create: InstancesPost) throws {
        func raw(_ metadata: String, type: String = "sync", operation: String = "") -> RawResponse {
            RawResponse(status: 200, headers: [:], body: ByteBuffer(string: """
                {"type":"\(type)","status":"Success","status_code":200,"operation":"\(operation)","error_code":0,"error":"",\
                "metadata":\(metadata)}
                """))
        }
        let operation = #"{"id":"r","class":"task","description":"Creating instance","status":"Success","status_code":200,"# +
            #""resources":{"instances":["/1.0/instances/r"]},"metadata":{},"may_cancel":false,"err":""}"#
        let instance = #"{"name":"r","type":"container","status":"Running","status_code":103,"architecture":"x86_64","# +
            #""config":{"user.r":"r"},"devices":{"r":{"type":"unix-char","source":"/dev/null"}},"expanded_config":{},"# +
            #""expanded_devices":{},"profiles":["default"],"ephemeral":false,"stateful":false,"description":"","# +
            #""created_at":"2026-01-01T00:00:00Z","project":"default"}"#
        _ = try decode(LXDOperation.self, from: raw(operation, type: "async", operation: "/1.0/operations/r"))
        _ = try decode(StoragePool.self, from: raw(#"{"name":"r","driver":"btrfs","status":"Created","config":{}}"#))
        _ = try decode(StoragePoolResources.self, from: raw(#"{"space":{"used":1,"total":2}}"#))
        _ = try decode(ImageAlias.self, from: raw(#"{"name":"r","description":"","target":"r","type":"container"}"#))
        _ = try decode([Instance].self, from: raw("[\(instance)]"))
        _ = try decode(Instance.self, from: raw(instance))
        _ = try decode(InstanceState.self, from: raw(#"{"status":"Running","status_code":103,"pid":1,"processes":1,"# +
            #""cpu":{"usage":1},"memory":{"usage":1,"usage_peak":1},"disk":{"root":{"usage":1}},"network":{"eth0":{"# +
            #""addresses":[{"family":"inet","address":"10.0.0.2","netmask":"24","scope":"global"}],"hwaddr":"","host_name":"","# +
            #""state":"up","type":"broadcast"}}}"#))
        let event = #"{"type":"lifecycle","timestamp":"2026-01-01T00:00:00Z","# +
            #""metadata":{"action":"instance-started","source":"/1.0/instances/r"}}"#
        _ = try JSONDecoder().decode(Event.self, from: Data(event.utf8))
        _ = try jsonBody(create)
        _ = try jsonBody(InstanceStatePut(action: .start, timeout: 30, force: false))
    }
}
