/// Writes one JSON object field by field. Stored fragments (a task's session, an event's data)
/// were validated JSON when they were stored, so they are embedded as they are instead of
/// being parsed and printed again on every read.
public struct JSONWriter: Sendable {
    private var out = "{"
    private var first = true

    public init() {}

    public var text: String { out + "}" }

    private mutating func key(_ name: String) {
        if !first { out += "," }
        first = false
        Self.quote(name, into: &out)
        out += ":"
    }

    public mutating func field(_ name: String, _ value: String?) {
        key(name)
        if let value { Self.quote(value, into: &out) } else { out += "null" }
    }

    public mutating func field(_ name: String, _ value: Int64?) {
        key(name)
        out += value.map(String.init) ?? "null"
    }

    /// A finite number, with at most two decimals (percentages); not finite writes null.
    public mutating func field(_ name: String, _ value: Double) {
        key(name)
        out += value.isFinite ? String((value * 100).rounded() / 100) : "null"
    }

    public mutating func field(_ name: String, _ value: Bool) {
        key(name)
        out += value ? "true" : "false"
    }

    /// A fragment that is already JSON (object, array, number); nil writes null.
    public mutating func raw(_ name: String, _ json: String?) {
        key(name)
        out += json ?? "null"
    }

    public static func quote(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    public static func array(_ items: [String]) -> String { "[" + items.joined(separator: ",") + "]" }
}
