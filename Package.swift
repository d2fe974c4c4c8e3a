// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "kioskd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kioskd", targets: ["kioskd"]),
        .executable(name: "kioskd-bench", targets: ["Benchmarks"]),
        .executable(name: "kioskd-testchild", targets: ["TestChild"]),
        .library(name: "Supervision", targets: ["Supervision"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket.git", from: "1.6.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // jwt-kit's own: HMAC for the host-to-host proof (Bridge's ClusterAuth).
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
    ],
    targets: [
        // fork/exec, pidfd and the few variadic syscalls Swift cannot call directly.
        .target(name: "CSupport"),
        // What every target uses and none owns: the serial thread for blocking loops, Broadcast and
        // OnceValue, the one race against work or the clock, system calls and small files, any
        // JSON value, random bytes and ids.
        .target(name: "Essentials", dependencies: ["CSupport"]),
        // OTP supervision and OS processes, nothing else.
        .target(
            name: "Supervision",
            dependencies: [
                "CSupport", "Essentials",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // libX11 + libXtst, and the few things Swift cannot do with Xlib directly: error
        // handlers that never exit, opening a display with a given cookie.
        .target(name: "CX11", linkerSettings: [.linkedLibrary("X11"), .linkedLibrary("Xtst")]),
        // What a viewer may do: its role, and which keysyms it may type (one rule for the
        // bridge's filter and the X keymap).
        .target(name: "ViewerInput"),
        // Xlib: the key grabber, XTEST self-test and input release, the window watchdog.
        .target(
            name: "Display",
            dependencies: [
                "CX11", "Essentials", "ViewerInput",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // One small file per session program turning settings into a child spec; displays,
        // cookies, ports, the session tree and its manager; the CDP client that watches the tab.
        .target(
            name: "Kiosk",
            dependencies: [
                "Essentials", "Supervision", "Display", "ViewerInput",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "WSClient", package: "swift-websocket"),
            ]
        ),
        // Tasks and their events, kept in SQLite (embedded) or PostgreSQL behind one protocol.
        .target(
            name: "Store",
            dependencies: [
                "Essentials",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The control API: the task lifecycle, the task service, the routes, viewer tokens,
        // and the client the CLI commands use.
        .target(
            name: "Control",
            dependencies: [
                "Essentials", "Store", "Kiosk", "Supervision", "ViewerInput",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.embedInCode("API/openapi.json")]
        ),
        // The public listener's VNC bridge: the RFB client-stream filter (pure), the WebSocket ↔
        // x11vnc relay, viewer authentication, the viewer page.
        .target(
            name: "Bridge",
            dependencies: [
                "Essentials", "Control", "Store", "ViewerInput",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "KioskdDaemon",
            dependencies: [
                "Essentials",
                "Supervision",
                "Kiosk",
                "Display",
                "ViewerInput",
                "Store",
                "Control",
                "Bridge",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        .executableTarget(name: "kioskd", dependencies: ["KioskdDaemon"]),
        // A C program that misbehaves on command (ignores TERM, setsid grandchildren, floods).
        .executableTarget(name: "TestChild"),
        .executableTarget(
            name: "Benchmarks",
            dependencies: ["Essentials", "Supervision", "Kiosk", "Control", "Store", "Bridge", "ViewerInput", "KioskdTestSupport",
                           "KioskdDaemon",  // the config loader, for the fuzzer
                           .product(name: "Logging", package: "swift-log")]
        ),
        // Shared by the test targets: event recorder, helper lookup, /proc checks.
        .target(
            name: "KioskdTestSupport",
            dependencies: ["Essentials", "Supervision", "Display", "Kiosk", "CSupport", .product(name: "Logging", package: "swift-log")],
            path: "Tests/Support"
        ),
        .testTarget(
            name: "SupervisionTests",
            dependencies: ["Essentials", "Supervision", "KioskdTestSupport", "TestChild"]
        ),
        .testTarget(
            name: "StoreTests",
            dependencies: ["Essentials", "Store", "KioskdTestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "ControlTests",
            dependencies: ["Essentials", "Control", "Store", "Kiosk", "Supervision", "ViewerInput", "KioskdTestSupport", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "BridgeTests",
            dependencies: ["Essentials", "Bridge", "Control", "Store", "Kiosk", "Supervision", "KioskdTestSupport", "ViewerInput", "CX11",
                           .product(name: "WSClient", package: "swift-websocket"), .product(name: "JWTKit", package: "jwt-kit"),
                           .product(name: "NIOSSL", package: "swift-nio-ssl"),
                           .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(
            name: "DisplayTests",
            dependencies: [
                "Display", "Essentials", "ViewerInput", "Kiosk", "Supervision", "KioskdTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "KioskTests",
            dependencies: [
                "Kiosk", "Display", "Essentials", "ViewerInput", "Supervision", "KioskdTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "KioskdDaemonTests",
            dependencies: [
                "KioskdDaemon", "KioskdTestSupport", "kioskd", "TestChild", "Control", "Kiosk", "Essentials", "Supervision", "ViewerInput",
                .product(name: "Yams", package: "Yams"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
