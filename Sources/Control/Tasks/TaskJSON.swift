import Kiosk
import Store

/// The API's JSON for tasks, events and sessions (snake_case; times as RFC 3339 UTC).
public enum TaskJSON {
    public static func task(_ t: TaskRecord) -> String {
        var w = JSONWriter()
        w.field("task_id", t.id)
        w.field("state", t.state.rawValue)
        w.field("created_at", rfc3339(t.createdAt))
        w.field("updated_at", rfc3339(t.updatedAt))
        w.field("ended_at", t.endedAt.map(rfc3339))
        w.field("reason", t.reason)
        w.raw("request", t.request)
        w.raw("session", t.session)
        w.field("last_event", t.lastSeq)
        // Cluster mode: the host that claimed it (nil while in the shared queue).
        if t.origin != nil || t.host != nil { w.field("host", t.host) }
        return w.text
    }

    public static func event(_ e: EventRecord) -> String {
        var w = JSONWriter()
        w.field("seq", e.seq)
        w.field("type", e.type)
        w.field("time", rfc3339(e.time))
        w.raw("data", e.data)
        return w.text
    }

    public static func session(_ s: SessionInfo) -> String {
        var w = JSONWriter()
        w.field("id", s.id)
        w.field("state", s.state.rawValue)
        w.field("display", s.display)
        w.field("cdp_url", s.cdpURL)
        w.field("vnc_socket", s.vncSocket)
        var pids = JSONWriter()
        for (child, pid) in s.pids.sorted(by: { $0.key < $1.key }) { pids.field(child, Int64(pid)) }
        w.raw("pids", pids.text)
        return w.text
    }

    /// Milliseconds since the epoch as `2026-11-22T01:50:00.123Z` (civil-from-days, UTC).
    public static func rfc3339(_ ms: Int64) -> String {
        let seconds = ms >= 0 ? ms / 1000 : (ms - 999) / 1000
        let millis = Int(ms - seconds * 1000)
        var days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secondOfDay = Int(seconds - days * 86400)
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let ms3 = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return "\(year)-\(two(Int(month)))-\(two(Int(day)))T\(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)).\(ms3)Z"
    }
}
