// `--only-fuzz`: seeded random + mutation fuzzers for the RFB filter (FuzzRFB.swift), the control
// API's request bodies and the config loader (FuzzParsers.swift).
//
// Not libFuzzer: `swift build --sanitize=fuzzer` works with this toolchain (a standalone target
// of RFBFilter.swift alone builds and runs), but the code under test lives in modules that need
// NIO, BoringSSL, GRDB and PostgresNIO, and a sanitized build of those takes over 10 minutes on
// 2 cores beside the normal one. These fuzzers run in the bench binary instead, in release.
import Essentials

#if canImport(Glibc)
import Glibc
#endif

/// xoshiro256** seeded through SplitMix64: fast, and one seed gives the same inputs again.
struct FuzzRandom {
    private var s0, s1, s2, s3: UInt64

    init(seed: UInt64) {
        var x = seed
        func split() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        (s0, s1, s2, s3) = (split(), split(), split(), split())
    }

    mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }

    /// 0..<n; n > 0.
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func within(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in byte() } }
    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    /// A size skewed towards small: mostly up to 8, sometimes up to `max`.
    mutating func size(_ max: Int) -> Int {
        switch below(10) {
        case 0..<6: return below(min(9, max + 1))
        case 6..<9: return below(min(65, max + 1))
        default: return below(max + 1)
        }
    }
}

/// Byte-level mutations shared by the three fuzzers.
enum Mutation {
    static let interestingBytes: [UInt8] = [0, 1, 2, 3, 4, 5, 6, 0x20, 0x7F, 0x80, 0xFE, 0xFF, 150, 248, 250, 251, 255]
    /// Lengths at and past the bounds that matter: 1 MiB of cut text, 2³¹, 64-byte fences.
    static let lengths32: [UInt32] = [0x7FFF_FFFF, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFF, 0x0010_0000, 0x0010_0001, 0xFFF0_0000, 64, 65, 0xFFFF]
    /// 1024 and 1025 encodings, and the U16 extremes.
    static let lengths16: [UInt16] = [0xFFFF, 0x8000, 1024, 1025, 0, 1]

    /// 1–5 mutations: a bit flipped, an interesting byte, a truncation, a splice with `other`,
    /// a huge length, random bytes or a `token` inserted, a range deleted or repeated, a random
    /// tail. Positions fall at or after `start` half the time (past a handshake or a header).
    static func mutate(_ input: inout [UInt8], other: [UInt8], start: Int, tokens: [[UInt8]], _ r: inout FuzzRandom) {
        for _ in 0..<r.within(1...5) {
            func position(_ end: Int) -> Int {
                let from = r.chance(50) ? min(start, end) : 0
                return from + r.below(end - from + 1)
            }
            switch r.below(11) {
            case 0 where !input.isEmpty:
                let at = position(input.count - 1)
                input[at] ^= 1 << UInt8(r.below(8))
            case 1 where !input.isEmpty:
                input[position(input.count - 1)] = r.pick(interestingBytes)
            case 2:
                input.removeSubrange(position(input.count)...)
            case 3:
                let cut = position(input.count)
                let from = r.below(other.count + 1)
                input = Array(input[..<cut]) + other[from...]
            case 4 where input.count >= 4:
                let at = position(input.count - 4)
                let v = r.pick(lengths32)
                input.replaceSubrange(at..<(at + 4), with: [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)])
            case 5 where input.count >= 2:
                let at = position(input.count - 2)
                let v = r.pick(lengths16)
                input.replaceSubrange(at..<(at + 2), with: [UInt8(v >> 8), UInt8(v & 0xFF)])
            case 6:
                input.insert(contentsOf: r.bytes(r.within(1...16)), at: position(input.count))
            case 7 where !input.isEmpty:
                let at = position(input.count - 1)
                input.removeSubrange(at..<min(input.count, at + r.within(1...32)))
            case 8 where !input.isEmpty:
                let at = position(input.count - 1)
                let piece = input[at..<min(input.count, at + r.within(1...64))]
                input.insert(contentsOf: Array(repeating: piece, count: r.within(1...4)).joined(), at: position(input.count))
            case 9:
                input.replaceSubrange(position(input.count)..., with: r.bytes(r.size(512)))
            case 10 where !tokens.isEmpty:
                input.insert(contentsOf: r.pick(tokens), at: position(input.count))
            default:
                input.append(r.byte())
            }
        }
    }
}

/// The seeds and every input that once found a bug, one file each, loaded before the random
/// inputs: Tests/Fuzz/corpus/<target>/.
enum FuzzCorpus {
    /// The checkout this binary was built from.
    static let defaultDirectory: String = {
        var path = #filePath
        for _ in 0..<3 { path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
        return path + "/Tests/Fuzz/corpus"
    }()

    static func load(_ directory: String, _ target: String) -> [(name: String, bytes: [UInt8])] {
        let dir = directory + "/" + target
        let files = directoryEntries(dir).compactMap { name in readSmallFileBytes(dir + "/" + name, limit: 1 << 22).map { (name: name, bytes: $0) } }
        if files.isEmpty { fail("no fuzz corpus in \(dir) (--fuzz-corpus DIR names another)") }
        return files
    }
}

// The input under test, where the signal handler finds it: valid while `FuzzRun.check` runs
// its closure (the array is alive and pinned for that long).
nonisolated(unsafe) private var inputUnderTest = UnsafeBufferPointer<UInt8>(start: nil, count: 0)
nonisolated(unsafe) private var crashPath = [CChar](repeating: 0, count: 256)
nonisolated(unsafe) private var crashNote = [CChar](repeating: 0, count: 512)
nonisolated(unsafe) private var previousActions: [sigaction] = Array(repeating: sigaction(), count: 32)
private let crashSignals = [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT]

/// A trap in the code under test writes the input to a file first, then the previous handler
/// (Swift's backtracer) reports it: the input goes to the corpus with its fix.
private func saveInputAndCrash(_ signal: Int32) {
    let fd = open(crashPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    if fd >= 0 {
        _ = write(fd, inputUnderTest.baseAddress, inputUnderTest.count)
        close(fd)
    }
    _ = write(2, crashNote, strlen(crashNote))
    // Returning re-runs the faulting instruction, now under the previous handler.
    _ = sigaction(signal, &previousActions[Int(signal)], nil)
}

/// One target's run: its counters, the properties it broke, its report line.
struct FuzzRun {
    let target: String
    let seed: UInt64
    private(set) var inputs = 0
    private(set) var bytes = 0
    private(set) var violations = 0
    private(set) var slowest = 0.0
    private let started = monotonic()
    /// Any single input slower than this is a finding (a hang), not noise.
    static let hangSeconds = 2.0
    static let outputDirectory = "/tmp/kioskd-fuzz"

    init(target: String, seed: UInt64) {
        self.target = target
        self.seed = seed
        mkdir(Self.outputDirectory, 0o755)
        let path = "\(Self.outputDirectory)/crash-\(target)-seed\(seed).bin"
        let note = "\nkioskd-bench fuzz \(target): crashed on the input saved in \(path); add it to Tests/Fuzz/corpus/\(target)/ with the fix\n"
        crashPath = Array(path.utf8CString.prefix(255)) + [0]
        crashNote = Array(note.utf8CString.prefix(511)) + [0]
        for signal in crashSignals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { saveInputAndCrash($0) }
            sigemptyset(&action.sa_mask)
            _ = sigaction(signal, &action, &previousActions[Int(signal)])
        }
    }

    /// Runs `properties` on `input`; each string it returns is a broken property.
    mutating func check(_ input: [UInt8], _ properties: () -> [String]) {
        let t0 = monotonic()
        let broken = input.withUnsafeBufferPointer { buffer in
            inputUnderTest = buffer
            defer { inputUnderTest = UnsafeBufferPointer(start: nil, count: 0) }
            return properties()
        }
        let elapsed = monotonic() - t0
        slowest = max(slowest, elapsed)
        inputs += 1
        bytes += input.count
        for what in broken { violated(what, input) }
        if elapsed > Self.hangSeconds { violated("took \(Int(elapsed * 1000)) ms (a hang)", input) }
    }

    /// The first few are printed and saved; all are counted.
    private mutating func violated(_ what: String, _ input: [UInt8]) {
        violations += 1
        guard violations <= 5 else { return }
        let path = "\(Self.outputDirectory)/failure-\(target)-seed\(seed)-\(violations).bin"
        if let f = fopen(path, "w") {
            _ = input.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) }
            fclose(f)
        }
        print("fuzz \(target): PROPERTY VIOLATED: \(what) (input \(inputs), \(input.count) bytes, saved in \(path))")
        // Out now: a crash later in the run must not lose it (nil: every stream, stdout's too).
        fflush(nil)
    }

    func report(_ extra: String) {
        let elapsed = monotonic() - started
        let rate = Double(inputs) / max(elapsed, 1e-9)
        print("fuzz \(target): \(inputs) inputs (\(bytes / 1024) KiB) in \(String(Int(elapsed * 10)).withDecimal(1)) s, "
            + "\(Int(rate)) inputs/s, slowest input \(ms(slowest)) ms\(extra); properties violated: \(violations)")
        fflush(nil)
    }

    /// Restores the default handlers' chain (Swift's) once this target is done.
    func finish() {
        for signal in crashSignals { _ = sigaction(signal, &previousActions[Int(signal)], nil) }
    }
}

/// The three fuzzers, one after the other; a violated property fails the bench (and so the
/// test command's smoke run).
func runFuzzers(_ options: Options) {
    let seed = options.fuzzSeed ?? UInt64(truncatingIfNeeded: Int(monotonic() * 1e9)) ^ UInt64(getpid())
    print("\nfuzzing: seed \(seed) (the same inputs again: --fuzz-seed \(seed)); corpus \(options.fuzzCorpus)")
    var violations = 0
    if options.fuzzInputs > 0 { violations += fuzzRFB(inputs: options.fuzzInputs, seed: seed, corpus: options.fuzzCorpus) }
    if options.fuzzParserInputs > 0 {
        violations += fuzzRequests(inputs: options.fuzzParserInputs, seed: seed, corpus: options.fuzzCorpus)
        violations += fuzzConfig(inputs: options.fuzzParserInputs, seed: seed, corpus: options.fuzzCorpus)
    }
    if violations > 0 { fail("fuzzing broke \(violations) properties (inputs in \(FuzzRun.outputDirectory))") }
}
