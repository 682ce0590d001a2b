import NIOCore

extension LXDClient {
    static func instancePath(_ name: String) -> String { "/1.0/instances/\(pathEscape(name))" }

    /// Lists instances with their config. `userFilter` keeps those whose `user.*` keys have the given
    /// values (keys given without the `user.` prefix), filtered by LXD (`?filter=config.user.k eq v`).
    /// Every project's instances when `projectRouting` spreads them over projects and no project is set.
    public func listInstances(userFilter: [String: String] = [:]) async throws -> [Instance] {
        try await listInstances(userFilter: userFilter, allProjects: projectRouting != nil && project == nil)
    }

    /// - Parameter allProjects: list every project's instances (each with its `project`), else this client's project's.
    public func listInstances(userFilter: [String: String], allProjects: Bool) async throws -> [Instance] {
        var query = [("recursion", "1")]
        if allProjects { query.append(("all-projects", "true")) }
        if !userFilter.isEmpty {
            let clauses = userFilter.sorted { $0.key < $1.key }.map { "config.user.\($0.key) eq \($0.value)" }
            query.append(("filter", clauses.joined(separator: " and ")))
        }
        return try await sync(.GET, "/1.0/instances", query: query, as: [Instance].self).0
    }

    /// `GET /1.0/instances/<name>`; returns the instance and its ETag for a later `If-Match`.
    public func instance(_ name: String) async throws -> (instance: Instance, etag: String?) {
        try LXDName.validateInstance(name)
        let (i, etag) = try await sync(.GET, Self.instancePath(name), as: Instance.self)
        return (i, etag)
    }

    /// Whether an instance of that name exists.
    public func instanceExists(_ name: String) async throws -> Bool {
        do {
            _ = try await instance(name)
            return true
        } catch let e as LXDError where e.code == .notFound {
            return false
        }
    }

    /// Creates an instance (stopped) and waits until LXD has finished unpacking it.
    public func createInstance(_ spec: InstancesPost, timeout: Duration? = nil) async throws {
        try LXDName.validateInstance(spec.name)
        var client = self
        client.project = project ?? projectRouting?(spec.name)
        try await client.asyncCall(.POST, "/1.0/instances", headers: Self.jsonHeaders, body: try Self.jsonBody(spec), timeout: timeout)
    }

    /// The config key LXD 5.0 records an unprivileged container's id map in while creating it.
    public static let idmapKey = "volatile.idmap.next"

    /// As ``createInstance(_:timeout:)``, calling `idmapAllocated` once: as soon as the new instance holds its id
    /// map (``idmapKey``), or when the create is over if it never shows one.
    ///
    /// LXD 5.0 records a new instance first, then picks its id map from the maps the other instances hold,
    /// then copies the image and shifts every file into that map: two creations whose first two steps
    /// overlap can pick the same map, or one outside the host's subordinate ids. Callers that serialize
    /// creations need to do so only until `idmapAllocated` (about 0.1 s); the copy and the shift, which grow
    /// with the image, may then run beside the next creation. Looked for every `pollInterval`.
    public func createInstance(_ spec: InstancesPost, timeout: Duration? = nil, pollInterval: Duration = .milliseconds(20),
                               idmapAllocated: @escaping @Sendable () async -> Void) async throws {
        try LXDName.validateInstance(spec.name)
        var client = self
        client.project = project ?? projectRouting?(spec.name)
        let creator = client
        enum Done: Sendable { case created, allocated }
        // Unless the spec brings its own (a copy's): then it would be seen before LXD chose one.
        let watch = spec.config[Self.idmapKey] == nil
        try await withThrowingTaskGroup(of: Done.self) { group in
            group.addTask {
                try await creator.createInstance(spec, timeout: timeout)
                return .created
            }
            if watch {
                group.addTask {
                    while true {
                        try await Task.sleep(for: pollInterval)
                        if let i = try? await creator.instance(spec.name).instance, i.config[Self.idmapKey] != nil { return .allocated }
                    }
                }
            }
            var signalled = false
            while let done = try await group.next() {
                if !signalled {
                    signalled = true
                    await idmapAllocated()
                }
                if done == .created {
                    group.cancelAll()
                    return
                }
            }
        }
    }

    /// Replaces the writable part of an instance. With `ifMatch`, LXD refuses (412) if it changed since.
    public func updateInstance(_ name: String, _ put: InstancePut, ifMatch etag: String? = nil) async throws {
        try LXDName.validateInstance(name)
        var headers = Self.jsonHeaders
        if let etag { headers.add(name: "If-Match", value: etag) }
        try await asyncCall(.PUT, Self.instancePath(name), headers: headers, body: try Self.jsonBody(put))
    }

    /// Merges config keys and whole devices into an instance (`PATCH`, sync in 5.0).
    public func patchInstance(_ name: String, config: [String: String] = [:], devices: [String: Device] = [:],
                              ifMatch etag: String? = nil) async throws {
        try LXDName.validateInstance(name)
        struct Patch: Encodable { var config: [String: String]; var devices: [String: Device] }
        try await syncSend(.PATCH, Self.instancePath(name), body: Patch(config: config, devices: devices), ifMatch: etag)
    }

    /// Renames a stopped instance. When `projectRouting` puts the new name in another project, the instance
    /// moves there under its new name in the same operation (as ``moveInstance(_:toProject:)`` does).
    public func renameInstance(_ name: String, to newName: String) async throws {
        try LXDName.validateInstance(name)
        try LXDName.validateInstance(newName)
        let from = routedProject(Self.instancePath(name)), to = routedProject(Self.instancePath(newName))
        struct Rename: Encodable { var name: String; var project: String?; var migration: Bool? }
        let body = from == to ? Rename(name: newName) : Rename(name: newName, project: to ?? project ?? "default", migration: true)
        try await asyncCall(.POST, Self.instancePath(name), headers: Self.jsonHeaders, body: try Self.jsonBody(body))
    }

    /// Moves a stopped instance, with its snapshots, into another project of this server, keeping its name
    /// (`POST` with `project` and `migration: true`, API extension `instance_project_move`). LXD copies it
    /// and deletes the original in one operation, and checks the target project's restrictions.
    public func moveInstance(_ name: String, toProject target: String) async throws {
        try LXDName.validateInstance(name)
        try LXDName.validateObject(target, kind: "project")
        struct Move: Encodable { var name: String; var project: String; var migration = true }
        try await asyncCall(.POST, Self.instancePath(name), headers: Self.jsonHeaders, body: try Self.jsonBody(Move(name: name, project: target)))
    }

    /// Deletes a stopped instance (LXD answers 400 "Instance is running" otherwise).
    public func deleteInstance(_ name: String) async throws {
        try LXDName.validateInstance(name)
        try await asyncCall(.DELETE, Self.instancePath(name))
    }

    /// Stops (forcefully) if running, then deletes; a missing instance is not an error.
    public func forceDeleteInstance(_ name: String) async throws {
        do {
            let (i, _) = try await instance(name)
            if i.statusCode != 102 { try await setState(name, .stop, timeout: 0, force: true) }
            try await deleteInstance(name)
        } catch let e as LXDError where e.code == .notFound {
            return
        }
    }

    // MARK: - State

    /// `GET /1.0/instances/<name>/state`.
    public func state(_ name: String) async throws -> InstanceState {
        try LXDName.validateInstance(name)
        return try await sync(.GET, Self.instancePath(name) + "/state", as: InstanceState.self).0
    }

    /// Changes the run state. `timeout` (seconds) bounds a clean shutdown; LXD would wait forever if omitted.
    public func setState(_ name: String, _ action: InstanceStatePut.Action, timeout: Int = 30, force: Bool = false) async throws {
        try LXDName.validateInstance(name)
        let body = InstanceStatePut(action: action, timeout: timeout, force: force)
        try await asyncCall(.PUT, Self.instancePath(name) + "/state", headers: Self.jsonHeaders, body: try Self.jsonBody(body),
                            timeout: .seconds(max(timeout, 0) + 60))
    }

    public func start(_ name: String, timeout: Int = 30) async throws { try await setState(name, .start, timeout: timeout) }
    public func stop(_ name: String, timeout: Int = 30, force: Bool = false) async throws {
        try await setState(name, .stop, timeout: timeout, force: force)
    }
    public func restart(_ name: String, timeout: Int = 30, force: Bool = false) async throws {
        try await setState(name, .restart, timeout: timeout, force: force)
    }

    /// Polls the instance state until it has a global IPv4 address (DHCP) or `timeout` passes.
    public func waitForIPv4(_ name: String, timeout: Duration = .seconds(60), poll: Duration = .milliseconds(250)) async throws -> String {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            if let ip = try await state(name).ipv4Addresses.first { return ip }
            try await Task.sleep(for: poll)
        }
        throw LXDError(code: .timeout, message: "instance \(name) got no IPv4 address within \(timeout)")
    }

    // MARK: - Devices

    /// Hot-adds (or replaces) one device on an instance, running or not.
    public func addDevice(_ instance: String, name: String, _ device: Device) async throws {
        try await patchInstance(instance, devices: [name: device])
    }

    /// Removes one device (read-modify-write with `If-Match`, retried if the instance changed meanwhile).
    /// Removing a device that is not there is not an error.
    public func removeDevice(_ instance: String, name: String) async throws {
        for attempt in 1...5 {
            let (i, etag) = try await self.instance(instance)
            guard i.devices[name] != nil else { return }
            var put = i.put
            put.devices[name] = nil
            do {
                try await updateInstance(instance, put, ifMatch: etag)
                return
            } catch let e as LXDError where e.code == .preconditionFailed && attempt < 5 {
                continue
            }
        }
    }

    // MARK: - Snapshots

    /// Creates a snapshot (not stateful).
    public func createSnapshot(_ instance: String, name: String) async throws {
        try LXDName.validateInstance(instance)
        try LXDName.validateSnapshot(name)
        struct Post: Encodable { var name: String; var stateful = false }
        try await asyncCall(.POST, Self.instancePath(instance) + "/snapshots", headers: Self.jsonHeaders,
                            body: try Self.jsonBody(Post(name: name)))
    }

    /// Lists an instance's snapshots, oldest first.
    public func snapshots(_ instance: String) async throws -> [InstanceSnapshot] {
        try LXDName.validateInstance(instance)
        return try await sync(.GET, Self.instancePath(instance) + "/snapshots", query: [("recursion", "1")],
                              as: [InstanceSnapshot].self).0.sorted { $0.createdAt < $1.createdAt }
    }

    /// Restores an instance to a snapshot (`PUT` with `restore`).
    public func restoreSnapshot(_ instance: String, name: String) async throws {
        try LXDName.validateInstance(instance)
        try LXDName.validateSnapshot(name)
        struct Restore: Encodable { var restore: String }
        try await asyncCall(.PUT, Self.instancePath(instance), headers: Self.jsonHeaders, body: try Self.jsonBody(Restore(restore: name)))
    }

    /// Deletes a snapshot.
    public func deleteSnapshot(_ instance: String, name: String) async throws {
        try LXDName.validateInstance(instance)
        try LXDName.validateSnapshot(name)
        try await asyncCall(.DELETE, Self.instancePath(instance) + "/snapshots/\(Self.pathEscape(name))")
    }
}
