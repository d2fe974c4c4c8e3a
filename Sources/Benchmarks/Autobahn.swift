// The two servers scripts/test-autobahn.sh points Autobahn|Testsuite's fuzzingclient at. Test
// only: the daemon has neither.
//
//   kioskd-bench --serve-autobahn-echo PORT [MAX_FRAME_SIZE]
//       (a) the public listener's WebSocket stack with the production settings (BridgeSettings'
//       defaults; MAX_FRAME_SIZE only for the second pass over the over-limit cases), every
//       upgrade echoed (EchoListener).
//   kioskd-bench --serve-autobahn-bridge PORT
//       (b) the real bridge: PublicServer with a running task whose BridgeTarget is an echo
//       target on a Unix socket (greets RFB 3.8 like x11vnc, then echoes), a control-role token.
//
// Each prints one line once it listens: `listening PORT` for (a), `url ws://…` for (b) (with
// the task and its token), then serves until killed.
@_spi(Conformance) import Bridge
import Control
import Essentials
import Kiosk
import KioskdTestSupport
import Logging
import Store

#if canImport(Glibc)
import Glibc
#endif

func serveAutobahnEcho(_ args: [String]) async throws -> Never {
    guard let port = args.first.flatMap({ Int($0) }) else { fail("--serve-autobahn-echo PORT [MAX_FRAME_SIZE]") }
    var settings = BridgeSettings()
    if args.count > 1 {
        guard let size = Int(args[1]), size > 0, size <= Int(UInt32.max) else { fail("MAX_FRAME_SIZE must be 1...\(UInt32.max)") }
        settings.maxFrameSize = size
    }
    var logger = Logger(label: "bench.autobahn.echo")
    logger.logLevel = .error
    try await EchoListener.run(.hostname("127.0.0.1", port: port), settings: settings, logger: logger) { bound in
        announce("listening \(bound)")
    }
    exit(0)
}

func serveAutobahnBridge(_ args: [String]) async throws -> Never {
    guard let port = args.first.flatMap({ Int($0) }) else { fail("--serve-autobahn-bridge PORT") }
    var logger = Logger(label: "bench.autobahn.bridge")
    logger.logLevel = .error
    let dir = try makeTempDir("kioskd-bench-autobahn")
    let store = try SQLiteTaskStore(path: dir + "/k.sqlite")
    try await store.migrate()
    let tokens = await ViewerTokens(secret: try ViewerTokens.secret(at: dir + "/viewer-token.key"))
    let service = TaskService(store: store, sessions: InstantSessions(), tokens: tokens, limits: TaskLimits(),
                              template: { id, r in SessionSettings(id: id, url: r.url) }, logger: logger)
    _ = try await service.interruptUnfinished()
    let target = TargetServer(stream: nil)
    let settings = BridgeSettings()
    let access = ViewerAccess(service: service, settings: settings) { _ in BridgeTarget(vncSocket: target.socket, websockify: nil) {} }
    try await race({ await service.run() }, { [logger] in
        let task = "autobahn"
        _ = try await service.create(CreateTask(taskID: task, url: "about:blank"))
        _ = try await service.waitRunning(task, timeout: .seconds(5))
        let token = try await tokens.mint(task: task, role: .control, ttl: 4 * 3600).token
        try await PublicServer(access: access, settings: settings).run(.hostname("127.0.0.1", port: port), logger: logger) { bound in
            announce("url ws://127.0.0.1:\(bound)/api/v1/vnc/ws?task_id=\(task)&token=\(token)")
        }
    })
    exit(0)
}

/// One line on stdout, written at once (the script waits for it).
private func announce(_ line: String) {
    var bytes = Array((line + "\n").utf8)
    _ = write(1, &bytes, bytes.count)
}
