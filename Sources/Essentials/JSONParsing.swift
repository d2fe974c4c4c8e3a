extension JSONValue {
    /// Why bytes are not JSON, and where.
    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let offset: Int
        public let reason: String
        public var description: String { "\(reason) at byte \(offset)" }
    }

    /// Containers nested deeper than this are refused, as JSONDecoder refuses them.
    public static let maxDepth = 512

    /// JSON text (RFC 8259) parsed in one pass, in time linear in its length.
    ///
    /// For untrusted text: decoding through JSONDecoder (`init(from:)`) tries each type in turn,
    /// and every failed try builds an error carrying the coding path, so it costs values × depth:
    /// 33 s of CPU for a 1 MiB body of arrays nested 64 deep (found by the bench's fuzzer).
    /// What this accepts and refuses is what JSONDecoder does, leniencies included: a leading
    /// byte order mark, one trailing comma before a closing bracket, the first of duplicate
    /// keys; no number that overflows or underflows to zero, no lone surrogate, no invalid UTF-8.
    /// Two differences: a repeated key's value is checked too (JSONDecoder never reads it, so it
    /// lets `{"a":1,"a":00}` through), and the text must be UTF-8, as RFC 8259 requires
    /// (JSONDecoder also reads UTF-16 and UTF-32, guessed from NUL bytes).
    public init(parsing bytes: some Collection<UInt8>) throws(ParseError) {
        var parser = JSONTextParser(Array(bytes))
        self = try parser.document()
    }
}

private struct JSONTextParser {
    let b: [UInt8]
    var i = 0
    var depth = 0

    init(_ bytes: [UInt8]) { b = bytes }

    func fail(_ reason: String) -> JSONValue.ParseError { JSONValue.ParseError(offset: i, reason: reason) }

    mutating func document() throws(JSONValue.ParseError) -> JSONValue {
        if b.starts(with: [0xEF, 0xBB, 0xBF]) { i = 3 }
        skipSpace()
        let value = try value()
        skipSpace()
        guard i == b.count else { throw fail("text after the value") }
        return value
    }

    mutating func skipSpace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    mutating func value() throws(JSONValue.ParseError) -> JSONValue {
        guard i < b.count else { throw fail("unexpected end") }
        switch b[i] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw fail("unexpected byte \(b[i])")
        }
    }

    mutating func literal(_ word: StaticString) throws(JSONValue.ParseError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count, b[i..<(i + n)].elementsEqual(UnsafeBufferPointer(start: word.utf8Start, count: n)) else { throw fail("not a literal") }
        i += n
    }

    /// After the opening bracket; true when the container is closed by `close`.
    mutating func enter(_ close: UInt8) throws(JSONValue.ParseError) -> Bool {
        depth += 1
        guard depth <= JSONValue.maxDepth else { throw fail("nested deeper than \(JSONValue.maxDepth) levels") }
        i += 1
        skipSpace()
        guard i < b.count, b[i] == close else { return false }
        i += 1
        depth -= 1
        return true
    }

    /// After an element: true when `close` ends the container, false after a comma.
    mutating func next(_ close: UInt8) throws(JSONValue.ParseError) -> Bool {
        skipSpace()
        guard i < b.count else { throw fail("unexpected end") }
        if b[i] == close {
            i += 1
            depth -= 1
            return true
        }
        guard b[i] == UInt8(ascii: ",") else { throw fail("expected ',' or a closing bracket") }
        i += 1
        skipSpace()
        // JSONDecoder's leniency: a trailing comma before the bracket.
        if i < b.count, b[i] == close {
            i += 1
            depth -= 1
            return true
        }
        return false
    }

    mutating func array() throws(JSONValue.ParseError) -> JSONValue {
        var items: [JSONValue] = []
        if try enter(UInt8(ascii: "]")) { return .array(items) }
        repeat {
            items.append(try value())
        } while try !next(UInt8(ascii: "]"))
        return .array(items)
    }

    mutating func object() throws(JSONValue.ParseError) -> JSONValue {
        var fields: [String: JSONValue] = [:]
        if try enter(UInt8(ascii: "}")) { return .object(fields) }
        repeat {
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a key") }
            let key = try string()
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            let value = try value()
            // The first of duplicate keys, as JSONDecoder keeps.
            if fields[key] == nil { fields[key] = value }
        } while try !next(UInt8(ascii: "}"))
        return .object(fields)
    }

    mutating func string() throws(JSONValue.ParseError) -> String {
        i += 1
        var out: [UInt8] = []
        while true {
            guard i < b.count else { throw fail("unterminated string") }
            let c = b[i]
            switch c {
            case UInt8(ascii: "\""):
                i += 1
                guard let s = String(validating: out, as: UTF8.self) else { throw fail("invalid UTF-8 in a string") }
                return s
            case UInt8(ascii: "\\"):
                i += 1
                guard i < b.count else { throw fail("unterminated escape") }
                let e = b[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var unit = try hex4()
                    if (0xDC00...0xDFFF).contains(unit) { throw fail("lone low surrogate") }
                    if (0xD800...0xDBFF).contains(unit) {
                        guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else { throw fail("lone high surrogate") }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("lone high surrogate") }
                        unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    // Surrogates are paired above: every unit left is a scalar.
                    UTF8.encode(Unicode.Scalar(unit)!) { out.append($0) }
                default:
                    throw fail("unknown escape")
                }
            case 0..<0x20:
                throw fail("control character in a string")
            default:
                out.append(c)
                i += 1
            }
        }
    }

    mutating func hex4() throws(JSONValue.ParseError) -> UInt32 {
        guard i + 4 <= b.count else { throw fail("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[i]
            let digit: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
            default: throw fail("bad \\u escape")
            }
            v = v << 4 | UInt32(digit)
            i += 1
        }
        return v
    }

    /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, as a finite Double that is not a
    /// nonzero literal underflowed to 0 (JSONDecoder refuses both).
    mutating func number() throws(JSONValue.ParseError) -> Double {
        let start = i
        var nonzero = false
        func isDigit(_ at: Int) -> Bool { at < b.count && b[at] >= UInt8(ascii: "0") && b[at] <= UInt8(ascii: "9") }
        if b[i] == UInt8(ascii: "-") { i += 1 }
        guard isDigit(i) else { throw fail("a number needs digits") }
        if b[i] == UInt8(ascii: "0") {
            i += 1
        } else {
            while isDigit(i) { nonzero = true; i += 1 }
        }
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            guard isDigit(i) else { throw fail("a fraction needs digits") }
            while isDigit(i) { nonzero = nonzero || b[i] != UInt8(ascii: "0"); i += 1 }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
            guard isDigit(i) else { throw fail("an exponent needs digits") }
            while isDigit(i) { i += 1 }
        }
        guard let value = Double(String(decoding: b[start..<i], as: UTF8.self)), value.isFinite, value != 0 || !nonzero else {
            throw JSONValue.ParseError(offset: start, reason: "number out of range")
        }
        return value
    }
}
