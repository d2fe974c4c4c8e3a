import Control
import Essentials
import HTTPTypes
import Hummingbird
import ViewerInput

/// The viewer page: Debian's noVNC, same origin, no external assets. `/viewer?task_id&token`
/// (checked like the WebSocket) sends the browser to noVNC's own page with the WebSocket path
/// in the URL fragment, so the token does not travel in any further request line or log.
enum ViewerPage {
    static func response(taskID: String, token: String, role: ViewerRole) -> Response {
        let path = "api/v1/vnc/ws?task_id=\(taskID)&token=\(token)"
        let fragment = "path=\(percentEncoded(path))&autoconnect=true&resize=scale&reconnect=true&show_dot=true"
            + (role == .view ? "&view_only=true" : "")
        return Response(status: .seeOther, headers: [.location: "/novnc/vnc.html#\(fragment)", .cacheControl: "no-store",
                                                     HTTPField.Name("Referrer-Policy")!: "no-referrer"])
    }

    static func percentEncoded(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if c.isLetter && byte < 0x80 || c.isNumber && byte < 0x80 || "-_.~".contains(c) {
                out.append(c)
            } else {
                out += "%" + hex([byte], uppercase: true)
            }
        }
        return out
    }
}
