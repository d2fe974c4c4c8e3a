#!/usr/bin/env python3
"""Judges the Autobahn|Testsuite reports of scripts/test-autobahn.sh; exit 1 naming every case
that is not as it must be, with a summary table either way.

    check.py EXPECTED.json REPORT_DIR...

EXPECTED.json: {agent: [case ids]}, the cases each agent must have run (listed by the suite
itself from the spec). Each REPORT_DIR holds reports/servers/index.json and the case files.

(a) kioskd-echo (the listener's stack, production settings, echoing): every case's behavior and
    behaviorClose must be OK, NON-STRICT or INFORMATIONAL, except the messages over the 1 MiB
    limit (9.1.4-6, 9.2.4-6, 9.3.*, 9.4.*), which must end with 1009: that is the designed
    answer. kioskd-echo-16m runs exactly those again with the limit raised to 16 MiB, where they
    must pass like any other.
(b) kioskd-bridge (the real bridge to an RFB echo target): the bridge is a byte-stream relay to
    an RFB server, not a message echo, so Autobahn's own verdict says little (every case sees the
    bridge's RFB greeting as an unexpected message, text is refused with 1003 and binary payloads
    that are not RFB are refused by the RFB filter). What is checked instead is that the bridge
    ends every case at the frame and with the close code its design says: the frames the client
    sent (the case's wire log) are replayed through the same rules here, in the order the bridge
    applies them (NIO's decoder, ViewerFrames, the RFB filter's version check).
"""
import collections
import json
import os
import sys

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
MAX_FRAME = 1 << 20          # BridgeSettings.maxFrameSize, frames and messages
RFB_VERSIONS = {b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n"}
GREETING = "RFB 003.008\n"


def case_key(case_id):
    return [int(part) for part in case_id.split(".")]


def over_limit(case_id):
    """The cases whose message is over 1 MiB: 9.1.4-6, 9.2.4-6 (4, 8, 16 MiB), 9.3.*, 9.4.* (4 MiB)."""
    k = case_key(case_id)
    return k[0] == 9 and ((k[1] in (1, 2) and k[2] >= 4) or k[1] in (3, 4))


# --- (b): what the bridge must do with the frames a case sent -------------------------------

def payload(entry):
    """A 'TF' wire-log entry's frame length and the payload bytes known (all, or a 64-byte prefix)."""
    (logged_len, text), repeat = entry[1], entry[6]
    truncated = text.endswith(" ...") and logged_len > 60
    if truncated:
        text = text[:-4]
    data = bytes.fromhex(text[2:]) if text.startswith("0x") else text.encode("utf-8", "surrogatepass")
    length = repeat if repeat is not None else logged_len
    if repeat is not None and not truncated and data:
        data = (data * (repeat // len(data) + 1))[:min(repeat, 64)]
        truncated = repeat > 64
    return length, data, not truncated


def utf8_state(data, complete):
    """'ok', 'bad', or 'unknown' (a truncated prefix that is fine so far)."""
    try:
        data.decode("utf-8")
        return "ok" if complete else "unknown"
    except UnicodeDecodeError as e:
        if not complete and e.end == len(data) and e.reason == "unexpected end of data":
            return "unknown"
        return "bad"


def may_send(code):
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def bridge_expectation(frames):
    """(code, reason, rule) the bridge must close with for these client frames, in order:
    (opcode, fin, rsv, length, data, complete). code None: no close (the client hung up)."""
    message = None          # (text?, bytes so far)
    stream = b""            # the viewer's binary bytes, up to the RFB version's 12
    for opcode, fin, rsv, length, data, complete in frames:
        control = opcode >= 8
        # NIO's decoder, at the frame header.
        if length > MAX_FRAME:
            return 1009, "frame too large", "frame over 1 MiB"
        if control and (not fin or length > 125):
            return 1002, "invalid control frame", "control frame fragmented or over 125 bytes"
        # ViewerFrames.
        if rsv:
            return 1002, "reserved bit set", "reserved bit"
        if opcode in (0, 1, 2):
            first = opcode != 0
            if first and message is not None:
                return 1002, "message inside a message", "new message inside a message"
            if not first and message is None:
                return 1002, "unexpected continuation", "continuation outside a message"
            text = opcode == 1 if first else message[0]
            if text:
                return 1003, "binary frames only", "text frame (by design)"
            total = (0 if first else message[1]) + length
            if total > MAX_FRAME:
                return 1009, "message too large", "message over 1 MiB"
            message = None if fin else (False, total)
            # The RFB filter: the first 12 bytes must be an RFB version.
            if len(stream) < 12:
                stream += data[:12 - len(stream)]
                if len(stream) == 12 and stream not in RFB_VERSIONS:
                    return 1002, "not an RFB 3.3/3.7/3.8 client", "binary payload is not RFB (RFB filter, by design)"
        elif opcode in (9, 10):
            continue
        elif opcode == 8:
            if length == 0:
                return 1000, None, "close echoed"
            if length == 1:
                return 1002, "close payload of 1 byte", "close with a 1-byte payload"
            code = data[0] << 8 | data[1]
            if not may_send(code):
                return 1002, "invalid close code", "close code no endpoint may send"
            if utf8_state(data[2:], complete) == "bad":
                return 1007, "invalid UTF-8 in close reason", "close reason not UTF-8"
            return code, None, "close echoed"
        else:
            return 1002, "unknown opcode", "reserved opcode"
    return None, None, "client hung up without a close"


# 6.4.3 and 6.4.4 write their text frame through autobahn's streaming API (beginMessage,
# sendMessageFrameData), which the wire log shows as raw octets, not as a frame.
STREAMED_TEXT = {"6.4.3", "6.4.4"}


def frames_from_wirelog(case_id, wirelog):
    out = [(1, False, 0, 0, b"", True)] if case_id in STREAMED_TEXT else []
    for entry in wirelog:
        if entry[0] == "TF":
            length, data, complete = payload(entry)
            out.append((entry[2], entry[3], entry[4], length, data, complete))
    return out


# 9.* turn the wire log off while they send: their first frame (all the bridge reads before it
# closes), from the cases' parameters: 9.1/9.2 one message of 64 KiB..16 MiB in one frame,
# 9.3/9.4 4 MiB in fragments of 64 B..4 MiB, 9.5/9.6 1 MiB in one frame (written in chops),
# 9.7/9.8 messages of 0..4096 bytes; odd subgroups text, even ones binary (none RFB). 9.8.1's
# messages are empty: the filter sees no byte, the bridge's greeting arrives where the case
# awaits its echo, and the case closes with 1000.
PAYLOADS_9 = {1: b"BAsd7&jh23", 2: b"\x00\xfe\x23\xfa\xf0", 3: b"*", 4: b"\xfe", 5: b"BAsd7&jh23", 6: b"\x00\xfe\x23\xfa\xf0",
              7: b"*", 8: b"\xfe"}


def frames_for_9(case_id):
    k = case_key(case_id)
    sub, n = k[1], k[2]
    opcode = 1 if sub % 2 else 2
    data = (PAYLOADS_9[sub] * 64)[:64]
    if sub in (1, 2):
        size = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20][n - 1]
        return [(opcode, True, 0, size, data, False)]
    if sub in (3, 4):
        size = [64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20][n - 1]
        return [(opcode, size == 4 << 20, 0, size, data, False)]
    if sub in (5, 6):
        return [(opcode, True, 0, 1 << 20, data, False)]
    if sub in (7, 8):
        size = [0, 16, 64, 256, 1024, 4096][n - 1]
        first = (opcode, True, 0, size, data[:size], size <= 64)
        return [first, (8, True, 0, 2, b"\x03\xe8", True)] if size == 0 else [first]
    raise ValueError("no frames known for " + case_id)


# --- reading and judging ---------------------------------------------------------------------

def main(argv):
    expected = json.load(open(argv[1]))
    reports, dirs = {}, {}
    for d in argv[2:]:
        index = os.path.join(d, "reports", "servers", "index.json")
        if not os.path.exists(index):
            print("autobahn: no report at %s (wstest never reached the server?)" % index)
            return 1
        for agent, cases in json.load(open(index)).items():
            reports[agent], dirs[agent] = cases, os.path.join(d, "reports", "servers")

    problems, rows, notes = [], [], []
    for agent, ids in expected.items():
        got = reports.get(agent, {})
        missing = [i for i in ids if i not in got]
        if missing:
            problems.append("%s: %d cases missing from the report: %s" % (agent, len(missing), " ".join(missing[:20])))
        counts = collections.Counter(got[i]["behavior"] for i in ids if i in got)
        by_design = collections.Counter()

        for case_id in sorted((i for i in ids if i in got), key=case_key):
            r = got[case_id]
            b, bc, code = r["behavior"], r["behaviorClose"], r["remoteCloseCode"]
            if agent == "kioskd-bridge":
                detail = json.load(open(os.path.join(dirs[agent], r["reportfile"])))
                if case_key(case_id)[0] == 9:
                    frames = frames_for_9(case_id)
                else:
                    frames = frames_from_wirelog(case_id, detail["wirelog"])
                    # The greeting comes first, unless the bridge closed before its relay started
                    # (a frame NIO's decoder refused at once).
                    received = [e for e in detail["wirelog"] if e[0] == "RF"]
                    if received and received[0][2] != 8 and not (received[0][2] == 2 and received[0][1][1] == GREETING):
                        problems.append("%s %s: the bridge's first frame is not its RFB greeting: %s" % (agent, case_id, received[0]))
                want, reason, rule = bridge_expectation(frames)
                got_reason = detail.get("remoteCloseReason") or None
                own_close = any(e[0] == "TF" and e[2] == 8 for e in detail["wirelog"])
                if code is None and case_key(case_id)[:2] in ([9, 5], [9, 6]) and detail["droppedByMe"] and own_close:
                    by_design["no close seen: the case answered the greeting with a close written into its own chopped frame, "
                              "then gave up after 1 s while the bridge still waited for the frame's end (9.5/9.6)"] += 1
                elif code != want or (want is not None and reason is not None and got_reason != reason):
                    problems.append("%s %s: closed with %s %r, the design says %s %r (%s)" % (agent, case_id, code, got_reason, want, reason, rule))
                else:
                    by_design[rule] += 1
                continue
            if agent == "kioskd-echo" and over_limit(case_id):
                if code == 1009:
                    by_design["1009: message over the 1 MiB limit"] += 1
                else:
                    problems.append("%s %s: over the 1 MiB limit, must close with 1009; got %s (%s/%s)" % (agent, case_id, code, b, bc))
                continue
            if b not in ACCEPTED or bc not in ACCEPTED:
                detail = json.load(open(os.path.join(dirs[agent], r["reportfile"])))
                problems.append("%s %s: %s / %s, close code %s: %s %s" % (agent, case_id, b, bc, code, detail.get("result"), detail.get("resultClose")))
            elif b != "OK" or bc != "OK":
                notes.append("%s %s: %s / %s (close code %s)" % (agent, case_id, b, bc, code))
        rows.append((agent, len(ids), counts, by_design))

    print("\nAutobahn|Testsuite, cases 1-7, 9, 10 (Autobahn's verdict per case: behavior)")
    kinds = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNCLEAN", "WRONG CODE", "UNIMPLEMENTED"]
    print("%-18s %6s " % ("target", "cases") + " ".join("%13s" % k for k in kinds))
    for agent, n, counts, _ in rows:
        print("%-18s %6d " % (agent, n) + " ".join("%13d" % counts.get(k, 0) for k in kinds))
    for agent, _, _, by_design in rows:
        if by_design:
            print("\n%s, by design:" % agent)
            for rule, n in sorted(by_design.items(), key=lambda kv: -kv[1]):
                print("  %4d  %s" % (n, rule))
    if notes:
        print("\nnot OK but accepted:")
        for line in notes:
            print("  " + line)
    if problems:
        print("\nautobahn: %d problem(s):" % len(problems))
        for line in problems:
            print("  " + line)
        return 1
    print("\nautobahn: every case as it must be")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
