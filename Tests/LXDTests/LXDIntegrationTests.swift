import Foundation
import NIOCore
import Synchronization
import Testing
@testable import LXD

/// Every call against the real LXD daemon, asserting on LXD's state afterwards.
@Suite(.serialized) struct LXDInstanceTests {
    @Test func serverInfoAndExtensions() async throws {
        let lxd = try TestLXD.client()
        let info = try await lxd.requireExtensions()
        #expect(info.apiVersion == "1.0")
        #expect(info.auth == "trusted")
        await #expect { try await lxd.requireExtensions(["instances", "no_such_extension_xyz"]) } throws: {
            let e = $0 as? LXDError
            return e?.code == .missingExtension && e?.message.contains("no_such_extension_xyz") == true
        }
    }

    @Test func aCreationReportsItsIdMapPickedBeforeItEndsAndOneStartedThenGetsADisjointMap() async throws {
        // The gateway serializes creations only until this report: LXD must already hold the first map then.
        let lxd = try TestLXD.client()
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let (a, b) = ("t-idmap-a-\(tag)", "t-idmap-b-\(tag)")
        @Sendable func spec(_ name: String) -> InstancesPost {
            InstancesPost(name: name, source: .image(alias: TestLXD.busybox), profiles: ["default", "iotgw-vendor"])
        }
        try await TestLXD.cleaningUp([a, b]) {
            let atReport = Mutex<(map: String?, second: Task<Void, any Error>?)>((nil, nil))
            try await lxd.createInstance(spec(a), idmapAllocated: {
                let map = try? await lxd.instance(a).instance.config[LXDClient.idmapKey]
                let second = Task { try await lxd.createInstance(spec(b)) }
                atReport.withLock { $0 = (map, second) }
            })
            let (map, second) = atReport.withLock { $0 }
            #expect(map != nil, "the report came before LXD recorded the map")
            try await #require(second).value
            let (ia, ib) = (try await lxd.instance(a).instance, try await lxd.instance(b).instance)
            let bases = try [ia, ib].map { try #require(Int($0.config["volatile.idmap.base"] ?? "")) }
            #expect(abs(bases[0] - bases[1]) >= 65536, "id maps overlap: bases \(bases)")
        }
    }

    @Test func createListFilterGetUpdateRenameDelete() async throws {
        let lxd = try TestLXD.client()
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let name = "t-crud-\(tag)"
        let renamed = "t-crud2-\(tag)"
        try await TestLXD.cleaningUp([name, renamed]) {
        try await lxd.createInstance(InstancesPost(
            name: name, source: .image(alias: TestLXD.busybox), profiles: ["default", "iotgw-vendor"],
            config: ["user.iotgw.vendor": "acme-\(tag)", "limits.memory": "64MiB"]))

        let listed = try await lxd.listInstances(userFilter: ["iotgw.vendor": "acme-\(tag)"])
        #expect(listed.map(\.name) == [name])
        #expect(try await lxd.listInstances(userFilter: ["iotgw.vendor": "nobody-\(tag)"]).isEmpty)

        let (inst, etag) = try await lxd.instance(name)
        #expect(inst.statusCode == 102)
        #expect(inst.expandedConfig["security.idmap.isolated"] == "true")
        #expect(inst.expandedConfig["security.privileged"] == "false")
        let etagValue = try #require(etag)

        var put = inst.put
        put.config["limits.memory"] = "96MiB"
        try await lxd.updateInstance(name, put, ifMatch: etagValue)
        #expect(try await lxd.instance(name).instance.config["limits.memory"] == "96MiB")

        // The old ETag is stale now: LXD refuses with 412 and its own message.
        await #expect { try await lxd.updateInstance(name, put, ifMatch: etagValue) } throws: {
            let e = $0 as? LXDError
            return e?.code == .preconditionFailed && e?.status == 412 && e?.message.contains("ETag") == true
        }

        try await lxd.patchInstance(name, config: ["user.iotgw.extra": "1"])
        #expect(try await lxd.instance(name).instance.config["user.iotgw.extra"] == "1")

        try await lxd.renameInstance(name, to: renamed)
        #expect(try await lxd.instanceExists(name) == false)
        #expect(try await lxd.instanceExists(renamed))

        try await lxd.deleteInstance(renamed)
        #expect(try await lxd.instanceExists(renamed) == false)
        }
    }

    /// A stopped instance moves into another project and back, with its snapshot, keeping its name; a
    /// running one is refused; listing every project shows where it is.
    @Test func moveBetweenProjects() async throws {
        let lxd = try TestLXD.client()
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let name = "t-move-\(tag)", project = "t-move-\(tag)"
        try await lxd.createProject(project, description: "test", config: ["features.images": "false", "features.profiles": "false"])
        func cleanUp() async {
            try? await lxd.inProject(project).forceDeleteInstance(name)
            try? await lxd.forceDeleteInstance(name)
            try? await lxd.deleteProject(project)
        }
        do {
            try await lxd.createInstance(InstancesPost(name: name, source: .image(alias: TestLXD.busybox), profiles: ["default"],
                                                       config: ["user.iotgw.vendor": "mover-\(tag)"]))
            try await lxd.createSnapshot(name, name: "s1")
            try await lxd.moveInstance(name, toProject: project)
            #expect(try await lxd.instanceExists(name) == false)
            let inside = lxd.inProject(project)
            #expect(try await inside.snapshots(name).map(\.name) == ["s1"])
            // Merging a key into a project that holds an instance keeps the rest (LXD's own PATCH would replace it all).
            try await lxd.patchProject(project, config: ["restricted.backups": "allow"])
            let config = try await lxd.project(project).config
            #expect(config["restricted.backups"] == "allow" && config["features.images"] == "false" && config["features.profiles"] == "false",
                    "\(config)")
            let everywhere = try await lxd.listInstances(userFilter: ["iotgw.vendor": "mover-\(tag)"], allProjects: true)
            #expect(everywhere.map { "\($0.project ?? "?")/\($0.name)" } == ["\(project)/\(name)"])

            try await inside.start(name)
            await #expect(throws: LXDError.self, "a running instance does not move") { try await inside.moveInstance(name, toProject: "default") }
            try await inside.stop(name, timeout: 10, force: true)
            try await inside.moveInstance(name, toProject: "default")
            #expect(try await lxd.instanceExists(name))
            #expect(try await inside.instanceExists(name) == false)
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
        await #expect(throws: LXDError.self) { try await lxd.project(project) }
    }

    @Test func createFromImageFingerprint() async throws {
        let lxd = try TestLXD.client()
        let fingerprint = try await lxd.imageAlias(TestLXD.busybox).target
        let name = "t-fp-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        try await TestLXD.cleaningUp([name]) {
            try await lxd.createInstance(InstancesPost(name: name, source: .image(fingerprint: fingerprint)))
            #expect(try await lxd.instance(name).instance.config["volatile.base_image"] == fingerprint)
        }
        await #expect { try await lxd.createInstance(InstancesPost(name: name, source: .image(fingerprint: String(repeating: "0", count: 64)))) } throws: {
            let e = $0 as? LXDError
            return e != nil && e?.message.isEmpty == false
        }
        #expect(try await lxd.instanceExists(name) == false)
    }

    @Test func startStopRestartAndState() async throws {
        try await TestLXD.withInstance("state", start: false) { lxd, name in
            try await lxd.start(name)
            var st = try await lxd.state(name)
            #expect(st.statusCode == 103)
            #expect(st.pid > 0)
            let pid = st.pid
            try await lxd.restart(name, timeout: 5, force: true)
            st = try await lxd.state(name)
            #expect(st.statusCode == 103)
            #expect(st.pid != pid)
            #expect(st.memory != nil)
            try await lxd.stop(name, timeout: 5, force: true)
            st = try await lxd.state(name)
            #expect(st.statusCode == 102)
            #expect(st.network == nil || st.ipv4Addresses.isEmpty)
        }
    }

    /// scripts/setup starts LXD with `LXD_EXEC_PATH` at packaging/lxd-exec: each container's `[lxc monitor]`
    /// (its init's parent) is then that small program, not a copy of LXD's Go runtime (11 MB private
    /// each, most of a vendor container's host memory). A container started through it still restarts.
    @Test func aContainersMonitorIsLxdExecAndKeepsUnderOneMegabyte() async throws {
        try await TestLXD.withInstance("monitor") { lxd, name in
            let daemon = try #require(try await lxd.server().environment?.serverPID)
            let environ = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "/proc/\(daemon)/environ")), as: UTF8.self)
            let execPath = try #require(environ.split(separator: "\0").first { $0.hasPrefix("LXD_EXEC_PATH=") }?
                .dropFirst("LXD_EXEC_PATH=".count),
                "LXD (pid \(daemon)) runs without LXD_EXEC_PATH: start it with scripts/setup")
            for round in 0..<2 {
                let initPID = try await lxd.state(name).pid
                let status = try String(contentsOfFile: "/proc/\(initPID)/status", encoding: .utf8)
                let ppid = try #require(status.split(separator: "\n").first { $0.hasPrefix("PPid:") }?
                    .split(separator: "\t").last.flatMap { Int($0) })
                let monitor = "/proc/\(ppid)"
                let cmdline = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "\(monitor)/cmdline")), as: UTF8.self)
                #expect(cmdline.hasPrefix("[lxc monitor]") && cmdline.contains(name), "round \(round): \(cmdline)")
                #expect(try FileManager.default.destinationOfSymbolicLink(atPath: "\(monitor)/exe") == String(execPath))
                let rollup = try String(contentsOfFile: "\(monitor)/smaps_rollup", encoding: .utf8)
                let privateKB = rollup.split(separator: "\n").filter { $0.hasPrefix("Private_") }
                    .compactMap { $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } }
                    .reduce(0, +)
                #expect(privateKB > 0 && privateKB < 1024, "round \(round): monitor keeps \(privateKB) kB private")
                if round == 0 { try await lxd.restart(name, timeout: 5, force: true) }
            }
        }
    }

    @Test func failuresAUserHits() async throws {
        let lxd = try TestLXD.client()
        // Invalid name: rejected before any request.
        await #expect { try await lxd.createInstance(InstancesPost(name: "Bad_Name", source: .image(alias: TestLXD.busybox))) } throws: {
            ($0 as? LXDError)?.code == .invalidName
        }
        // Unknown image: LXD's own text is kept.
        let ghost = "t-ghost-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
        await #expect { try await lxd.createInstance(InstancesPost(name: ghost, source: .image(alias: "no-such-image-alias"))) } throws: {
            let e = $0 as? LXDError
            return (e?.code == .notFound || e?.code == .operationFailed || e?.code == .badRequest) && e?.message.isEmpty == false
        }
        #expect(try await lxd.instanceExists(ghost) == false)

        try await TestLXD.withInstance("fail") { lxd, name in
            // Already exists.
            await #expect { try await lxd.createInstance(InstancesPost(name: name, source: .image(alias: TestLXD.busybox))) } throws: {
                let e = $0 as? LXDError
                return (e?.code == .conflict || e?.code == .operationFailed) && e?.message.contains("already exists") == true
            }
            // Delete while running.
            await #expect { try await lxd.deleteInstance(name) } throws: {
                let e = $0 as? LXDError
                return e?.code == .badRequest && e?.message.contains("running") == true
            }
            let stillRunning = try await lxd.instance(name).instance.isRunning
            #expect(stillRunning)
            // Not found.
            await #expect { try await lxd.state("t-missing-zz9") } throws: { ($0 as? LXDError)?.code == .notFound }
        }
    }
}

@Suite(.serialized) struct LXDExecAndFileTests {
    /// A process the command leaves behind, still holding its output, holds a file inside the instance
    /// (on its own disk), not on the host. With LXD's `record-output` (the control) it holds a file in
    /// the host's LXD log directory, outside any quota: one such writer filled it at about 70 MB/s, on
    /// after the command had returned.
    @Test func aProcessLeftBehindHoldsNoFileOnTheHost() async throws {
        try await TestLXD.withInstance("execleft") { lxd, name in
            try await lxd.push(name, path: "/tmp/writer.sh", string: "echo $$ >/tmp/writer.pid\nwhile :; do echo 0123456789; sleep 0.05; done\n")
            // The writer's output, seen from inside; then the writer goes.
            let held = "sleep 0.2; readlink /proc/$(cat /tmp/writer.pid)/fd/1; kill $(cat /tmp/writer.pid)"
            for onHost in [false, true] {
                let r = try await lxd.exec(name, ["sh", "-c", "sh /tmp/writer.sh & echo started"], outputOnHost: onHost)
                #expect(r.exitCode == 0 && r.stdout.contains("started\n"), "\(r.stdout.prefix(100))")
                let target = try await lxd.exec(name, ["sh", "-c", held]).stdout
                print("exec output \(onHost ? "recorded by LXD" : "captured inside"): a process left behind holds \(target)", terminator: "")
                if onHost {
                    #expect(target.contains("exec_") && target.hasSuffix(".stdout (deleted)\n"), "LXD's recording hands it the host's file: \(target)")
                } else {
                    #expect(target.hasPrefix("/var/tmp/.iotgw-exec-"), "it holds a file in the instance's /var/tmp: \(target)")
                }
            }
            let logs = (try? FileManager.default.contentsOfDirectory(atPath: "/var/log/lxd/\(name)")) ?? []
            #expect(!logs.isEmpty && !logs.contains { $0.hasPrefix("exec_") }, "no exec output left on the host: \(logs)")
        }
    }

    @Test func execRecordsOutputAndExitCode() async throws {
        try await TestLXD.withInstance("exec") { lxd, name in
            let r = try await lxd.exec(name, ["sh", "-c", "echo out; echo err >&2; echo $GREETING; exit 3"], environment: ["GREETING": "hi"])
            #expect(r == ExecResult(exitCode: 3, stdout: "out\nhi\n", stderr: "err\n"))
            #expect(try await lxd.exec(name, ["sh", "-c", "echo x; exit 4"], captureOutput: false) == ExecResult(exitCode: 4, stdout: "", stderr: ""))
            let ok = try await lxd.exec(name, ["id", "-u"], user: 0)
            #expect(ok.succeeded && ok.stdout == "0\n")
            // The command runs as LXD would run it: same umask, same exit code; the files are its owner's only.
            let umask = try await lxd.exec(name, ["sh", "-c", "umask"], outputOnHost: true).stdout
            #expect(try await lxd.exec(name, ["sh", "-c", "umask"]).stdout == umask && umask == "0022\n", "umask \(umask)")
            #expect(try await lxd.exec(name, ["sh", "-c", "stat -c %a /var/tmp/.iotgw-exec-*.out"]).stdout == "600\n")
            // Captured inside the instance, and the files deleted after reading.
            #expect(try await lxd.exec(name, ["sh", "-c", "ls -a /var/tmp | grep -c iotgw-exec"]).stdout == "2\n", "this command's own two")
            #expect(try await lxd.exec(name, ["sh", "-c", "ls -a /var/tmp | grep -c iotgw-exec"]).stdout == "2\n", "the last command's are gone")
            // LXD's own recording, asked for: the same result, and the logs on the host deleted after reading.
            #expect(try await lxd.exec(name, ["sh", "-c", "echo out; echo err >&2; exit 3"], outputOnHost: true)
                    == ExecResult(exitCode: 3, stdout: "out\n", stderr: "err\n"))
            let logs = try await lxd.sync(.GET, "/1.0/instances/\(name)/logs", as: [String].self).0
            #expect(!logs.contains { $0.contains("exec_") })

            try await lxd.push(name, path: "/tmp/notexec", string: "#!/bin/sh\necho no\n", attributes: FileAttributes(mode: 0o644))
            for onHost in [false, true] {
                await #expect { try await lxd.exec(name, ["no-such-command-xyz"], outputOnHost: onHost) } throws: {
                    let e = $0 as? LXDError
                    return e?.code == .commandNotFound && e?.status == 127 && e?.message.contains("Command not found") == true
                }
                await #expect { try await lxd.exec(name, ["/tmp/notexec"], outputOnHost: onHost) } throws: {
                    ($0 as? LXDError)?.code == .commandNotExecutable
                }
            }
            let killed = try await lxd.exec(name, ["sh", "-c", "kill -9 $$"])
            #expect(killed.exitCode == 137)
        }
    }

    @Test func pushPullModesDirectoriesAndDelete() async throws {
        try await TestLXD.withInstance("files") { lxd, name in
            try await lxd.mkdirAll(name, path: "/etc/chef/trusted_certs")
            try await lxd.push(name, path: "/etc/chef/client.pem", string: "secret\n", attributes: FileAttributes(uid: 0, gid: 0, mode: 0o600))
            let pulled = try await lxd.pull(name, path: "/etc/chef/client.pem")
            #expect(String(buffer: pulled.content) == "secret\n")
            #expect(pulled.attributes == FileAttributes(uid: 0, gid: 0, mode: 0o600))
            let ls = try await lxd.exec(name, ["stat", "-c", "%a %u %g", "/etc/chef/client.pem"])
            #expect(ls.stdout == "600 0 0\n")

            try await lxd.push(name, path: "/tmp/owned", string: "x", attributes: FileAttributes(uid: 1000, gid: 1000, mode: 0o640))
            #expect(try await lxd.exec(name, ["stat", "-c", "%a %u %g", "/tmp/owned"]).stdout == "640 1000 1000\n")

            try await lxd.push(name, path: "/tmp/owned", content: ByteBuffer(string: "y"), append: true)
            #expect(String(buffer: try await lxd.pull(name, path: "/tmp/owned").content) == "xy")

            let dir = try await lxd.pull(name, path: "/etc/chef")
            #expect(dir.type == "directory")
            #expect(dir.entries == ["client.pem", "trusted_certs"])

            try await lxd.deleteFile(name, path: "/tmp/owned")
            #expect(try await lxd.exec(name, ["test", "-e", "/tmp/owned"]).exitCode == 1)

            // Parent directories are not created by LXD: a clear error, nothing written.
            await #expect { try await lxd.push(name, path: "/no/such/dir/file", string: "x") } throws: {
                let e = $0 as? LXDError
                return e != nil && e?.code != .invalidArgument && e?.message.isEmpty == false
            }
            #expect(try await lxd.exec(name, ["test", "-e", "/no"]).exitCode == 1)
            await #expect { try await lxd.pull(name, path: "/no/such/file") } throws: { ($0 as? LXDError)?.code == .notFound }
            await #expect { try await lxd.push(name, path: "relative", string: "x") } throws: { ($0 as? LXDError)?.code == .invalidArgument }
        }
    }

    @Test func pushTreeAndStreamedFile() async throws {
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("lxd-tree-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let fm = FileManager.default
        try fm.createDirectory(at: tmp.appendingPathComponent("recipes/sub"), withIntermediateDirectories: true)
        try "name 'demo'\n".write(to: tmp.appendingPathComponent("metadata.rb"), atomically: true, encoding: .utf8)
        try "log 'x'\n".write(to: tmp.appendingPathComponent("recipes/default.rb"), atomically: true, encoding: .utf8)
        let script = tmp.appendingPathComponent("recipes/sub/run.sh")
        try "#!/bin/sh\necho tree-ok\n".write(to: script, atomically: true, encoding: .utf8)
        try fm.setAttributes([.posixPermissions: 0o755], ofItemAtPath: script.path)
        try fm.createSymbolicLink(atPath: tmp.appendingPathComponent("link").path, withDestinationPath: "metadata.rb")
        var big = Data(count: 3 * 1024 * 1024 + 17)
        big.withUnsafeMutableBytes { p in for i in stride(from: 0, to: p.count, by: 4096) { p[i] = UInt8(i / 4096 % 251) } }
        let bigFile = FileManager.default.temporaryDirectory.appendingPathComponent("lxd-big-\(UUID().uuidString)")
        try big.write(to: bigFile)
        defer { try? FileManager.default.removeItem(at: bigFile) }

        try await TestLXD.withInstance("tree") { lxd, name in
            let n = try await lxd.pushTree(name, localDirectory: tmp.path, to: "/var/chef/cookbooks/demo")
            #expect(n == 3)
            #expect(try await lxd.exec(name, ["/var/chef/cookbooks/demo/recipes/sub/run.sh"]).stdout == "tree-ok\n")
            #expect(try await lxd.exec(name, ["readlink", "/var/chef/cookbooks/demo/link"]).stdout == "metadata.rb\n")
            #expect(String(buffer: try await lxd.pull(name, path: "/var/chef/cookbooks/demo/recipes/default.rb").content) == "log 'x'\n")

            let progress = ProgressLog()
            try await lxd.pushFile(name, localPath: bigFile.path, to: "/tmp/big.bin", progress: { progress.record($0) })
            #expect(progress.last == Int64(big.count))
            let back = try await lxd.pull(name, path: "/tmp/big.bin")
            #expect(back.content.readableBytes == big.count)
            #expect(Data(buffer: back.content) == big)

            await #expect { try await lxd.pushTree(name, localDirectory: "/no/such/local/dir", to: "/x") } throws: {
                ($0 as? LXDError)?.code == .invalidArgument
            }
        }
    }
}

final class ProgressLog: @unchecked Sendable {
    // Guarded by `lock`: the body stream calls back from NIO's threads.
    private let lock = NSLock()
    private var values: [Int64] = []
    func record(_ v: Int64) { lock.withLock { values.append(v) } }
    var last: Int64? { lock.withLock { values.last } }
}
