"""An agent as the seed's product writes one: Playwright over CDP against a kioskd task.

Run by PlaywrightTests against a real daemon: python3 playwright_agent.py SOCKET. Prints one
"ok <what>" line per step and exits non-zero at the first step that fails.
"""
import os
import signal
import sys

import httpx
from playwright.sync_api import sync_playwright

PAGE = ("data:text/html,<title>agent</title><input id=q><button id=b onclick=\"document.title='clicked:'+q.value\">go</button>"
        "<a id=pop href=about:blank target=_blank>pop</a>")


def ok(what):
    print("ok", what, flush=True)


class Kioskd:
    def __init__(self, socket):
        self.http = httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://kioskd", timeout=40)

    def call(self, method, path, **kwargs):
        answer = self.http.request(method, path, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def session(self, task_id):
        """The task's live session: CDP URL and program pids."""
        return next(s for s in self.call("GET", "/v1/sessions") if s["id"] == task_id)

    def wait_event(self, task_id, since, matches):
        """Long-polls the task's events (the daemon's own signal) until one matches."""
        for _ in range(30):
            for event in self.call("GET", f"/v1/tasks/{task_id}/events", params={"since": since, "wait": 20}):
                since = event["seq"]
                if matches(event):
                    return since
        raise AssertionError(f"no matching event after {since}")


def main():
    kioskd = Kioskd(sys.argv[1])
    task = kioskd.call("POST", "/v1/tasks", params={"wait": "true"}, json={"task_id": "agent-1", "url": "about:blank"})
    assert task["state"] == "running", task
    with sync_playwright() as p:
        browser = p.chromium.connect_over_cdp(task["session"]["cdp_url"])
        context = browser.contexts[0]
        page = context.pages[0]
        page.goto(PAGE)
        page.fill("#q", "kiosk")
        page.click("#b")
        assert page.title() == "clicked:kiosk", page.title()
        ok("goto, fill, click")
        assert page.screenshot()[:8] == b"\x89PNG\r\n\x1a\n"
        ok("screenshot")

        mine = context.new_page()
        mine.goto("data:text/html,<title>second</title>")
        with page.expect_popup() as popup:
            page.click("#pop")
        assert popup.value is not None
        ok("expect_popup sees the page's popup")
        # The popup (opened by the page) is closed by the lockdown; the agent's own page is not.
        # (It may be gone already: the sync API delivers events only inside its calls, so the
        # check and the wait cannot miss a close between them.)
        if not popup.value.is_closed():
            popup.value.wait_for_event("close")
        assert not mine.is_closed() and mine.evaluate("document.title") == "second"
        assert mine in context.pages
        ok("new_page survives")
        browser.close()  # over CDP: disconnects, the browser runs on

    assert kioskd.call("GET", "/v1/tasks/agent-1")["state"] == "running"
    since = kioskd.call("GET", "/v1/tasks/agent-1/events", params={"since": 0})[-1]["seq"]
    os.kill(kioskd.session("agent-1")["pids"]["chromium"], signal.SIGKILL)
    kioskd.wait_event("agent-1", since, lambda e: e["type"] == "browser" and "CDP attached" in e["data"].get("message", ""))
    ok("disconnect leaves the kiosk running; Chromium killed and back")

    with sync_playwright() as p:
        browser = p.chromium.connect_over_cdp(kioskd.session("agent-1")["cdp_url"])
        page = browser.contexts[0].pages[0]
        page.goto("data:text/html,<title>again</title>")
        assert page.title() == "again"
        browser.close()
    ok("reconnect after kill -9 of Chromium")


if __name__ == "__main__":
    main()
