@testable import Control
import Essentials
import FoundationEssentials
import Testing

/// The routes' body parsing without a server.
@Suite struct RequestBodyTests {
    /// Found by the bench's fuzzer (Tests/Fuzz/corpus/requests/found-nested-511.json): decoding
    /// through JSONDecoder into JSONValue cost values × depth, 1 s of CPU (release) for that 1 KiB
    /// body and 33 s for 1 MiB of arrays nested 64 deep. The routes' parser is linear.
    @Test func aDeeplyNestedBodyIsParsedInLinearTime() {
        let nest = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        let body = Array(("{\"bogus\": [" + Array(repeating: nest, count: 8000).joined(separator: ",") + "]}").utf8)
        #expect(body.count > 1_000_000)
        let start = ContinuousClock.now
        #expect(throws: APIError.badRequest("unknown field 'bogus' (allowed: height, input, max_lifetime_s, memory_max_mb, metadata, task_id, timeout_s, url, width)")) {
            try CreateTask(body: body)
        }
        #expect(ContinuousClock.now - start < .seconds(10), "parsed in \(ContinuousClock.now - start)")
    }

    /// The parser accepts and refuses what JSONDecoder does, leniencies included (the bench's
    /// fuzzer compares them on every shallow body).
    @Test(arguments: [
        #"{"a":1,"a":2}"#, #"["\ud800"]"#, #"["\udc00"]"#, #"["\ud83d\ude00"]"#, #"["\ude00\ud83d"]"#, #"["\ud800\u0041"]"#, #"["\u0000"]"#,
        "[1E400]", "[-1E400]", "[2e-400]", "[1e-400]", "[0e400]", "[2.4e-324]", "[2.5e-324]", "[5e-324]", "[1.7976931348623159e308]",
        "[-0]", "[123456789012345678901234567890]", "[1.0]", "[00]", "[01]", "[+1]", "[.5]", "[5.]", "[1e]", "[1e+]", "[-]",
        "\u{FEFF}{}", "\u{FEFF}\u{FEFF}{}", " \u{FEFF}{}", "[\"a\nb\"]", "[\"a\u{7F}b\"]", "5", "\"x\"", "", " ", "[1,]", #"{"a":1,}"#, "[,]",
        "[1,,]", "{,}", "1,", "[[1,],]", "[1 2]", "{} x", "{}{}", "[1 /* c */]", "[NaN]", "[true, false, null]", "[tru]", "[1,\u{0B}2]",
        #"["\x41"]"#, #"["\u12"]"#, #"["\U0041"]"#, #"["\/\b\f\n\r\t\"\\"]"#, #"{"\u0061":1,"a":2}"#, "{1:2}", #"["\uFFFF"]"#,
        String(repeating: "[", count: 512) + String(repeating: "]", count: 512), String(repeating: "[", count: 513) + String(repeating: "]", count: 513),
    ])
    func theParserAgreesWithJSONDecoder(text: String) {
        #expect((try? JSONValue(parsing: Array(text.utf8))) == (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))))
    }

    /// The two differences: JSONDecoder never reads a repeated key's value, so lets it be
    /// anything, and it reads UTF-16 and UTF-32 too (found by the fuzzer: `{\0}\0` is `{}`).
    @Test func aRepeatedKeysValueIsCheckedAndTheTextMustBeUTF8() {
        let text = #"{"a":1,"a":00,"a":"\udc00"}"#
        #expect((try? JSONValue(parsing: Array(text.utf8))) == nil)
        #expect((try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) == ["a": 1])
        #expect((try? JSONValue(parsing: Array(#"{"a":1,"a":2}"#.utf8))) == ["a": 1], "otherwise the first, as JSONDecoder")
        let utf16: [UInt8] = [0x7B, 0, 0x7D, 0]
        #expect((try? JSONValue(parsing: utf16)) == nil)
        #expect((try? JSONDecoder().decode(JSONValue.self, from: Data(utf16))) == [:])
    }

    @Test func invalidUTF8IsRefusedAsJSONDecoderRefusesIt() {
        for bytes: [UInt8] in [[0x5B, 0x22, 0xFF, 0x22, 0x5D], [0x5B, 0x22, 0xC0, 0xAF, 0x22, 0x5D], [0x5B, 0x22, 0xED, 0xA0, 0x80, 0x22, 0x5D]] {
            #expect((try? JSONValue(parsing: bytes)) == nil)
            #expect((try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))) == nil)
        }
    }
}
