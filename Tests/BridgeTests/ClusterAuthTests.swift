@testable import Bridge
import Essentials
import Testing

/// The host-to-host proof (pure: the time is given).
@Suite("Cluster auth")
struct ClusterAuthTests {
    let secret = Array(repeating: UInt8(7), count: 32)
    let target = "/api/v1/vnc/ws?task_id=t1&token=abc.def.ghi"
    let now: Int64 = 1_750_000_000

    @Test func aFreshProofHoldsForItsRequestOnly() {
        let auth = ClusterAuth(secret: secret)
        let proof = auth.proof(method: "GET", target: target, now: now)
        #expect(proof.hasPrefix("\(now).") && proof.count == "\(now).".count + 64)
        #expect(auth.check(proof, method: "GET", target: target, now: now) == nil)
        // Within the window either way (the hosts' clocks differ a little).
        #expect(auth.check(proof, method: "GET", target: target, now: now + ClusterAuth.window) == nil)
        #expect(auth.check(proof, method: "GET", target: target, now: now - ClusterAuth.window) == nil)
        // Upper-case hex is the same proof.
        let upper = String(proof.prefix { $0 != "." }) + "." + proof.split(separator: ".")[1].uppercased()
        #expect(auth.check(upper, method: "GET", target: target, now: now) == nil)
    }

    @Test func aStaleProofIsRefused() {
        let auth = ClusterAuth(secret: secret)
        let proof = auth.proof(method: "GET", target: target, now: now)
        #expect(auth.check(proof, method: "GET", target: target, now: now + ClusterAuth.window + 1) == .stale)
        #expect(auth.check(proof, method: "GET", target: target, now: now - ClusterAuth.window - 1) == .stale)
    }

    @Test func anotherSecretsProofIsRefused() {
        let mine = ClusterAuth(secret: secret)
        var other = secret
        other[31] ^= 1
        let theirs = ClusterAuth(secret: other).proof(method: "GET", target: target, now: now)
        #expect(mine.check(theirs, method: "GET", target: target, now: now) == .invalid)
        // The secret itself is not the key: an HMAC under the raw secret does not pass either.
        #expect(ClusterAuth(secret: randomBytes(32)).check(mine.proof(method: "GET", target: target, now: now), method: "GET", target: target, now: now) == .invalid)
    }

    @Test func aTamperedRequestIsRefused() {
        let auth = ClusterAuth(secret: secret)
        let proof = auth.proof(method: "GET", target: target, now: now)
        for (method, changed) in [("GET", "/api/v1/vnc/ws?task_id=t2&token=abc.def.ghi"), ("GET", "/api/v1/cdp/ws?task_id=t1&token=abc.def.ghi"),
                                  ("GET", target + "&role=control"), ("GET", String(target.dropLast())), ("POST", target)] {
            #expect(auth.check(proof, method: method, target: changed, now: now) == .invalid, "\(method) \(changed)")
        }
        // The time is signed too: a proof moved to another second is not one.
        let mac = proof.split(separator: ".")[1]
        #expect(auth.check("\(now + 1).\(mac)", method: "GET", target: target, now: now) == .invalid)
        // A flipped bit of the MAC.
        var bytes = Array(mac.utf8)
        bytes[0] = bytes[0] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        #expect(auth.check("\(now).\(String(decoding: bytes, as: UTF8.self))", method: "GET", target: target, now: now) == .invalid)
    }

    @Test func aMissingOrMalformedProofIsRefused() {
        let auth = ClusterAuth(secret: secret)
        let mac = String(repeating: "a", count: 64)
        #expect(auth.check(nil, method: "GET", target: target, now: now) == .missing)
        for bad in ["", "\(now)", "\(now).", ".\(mac)", "\(now).\(mac).x", "\(now).\(mac.dropLast())", "\(now).\(mac)aa", "\(now).\(mac.dropLast())g",
                    "-\(now).\(mac)", "+\(now).\(mac)", "99999999999999999999.\(mac)", " \(now).\(mac)", "\(now).\(mac) "] {
            #expect(auth.check(bad, method: "GET", target: target, now: now) == .malformed, "\(bad.debugDescription)")
        }
    }
}
