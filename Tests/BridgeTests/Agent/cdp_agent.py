"""An agent on a task's CDP endpoint through a kioskd listener, as a remote agent writes one.

Run by AgentEndpointTests: python3 cdp_agent.py WS_URL EXPECTED_TITLE. Playwright's
connect_over_cdp on the listener's /api/v1/cdp/ws (never the browser's own port): reads the
kiosk page, evaluates, navigates, and reads the result back. Prints one "ok <what>" line per step
and exits non-zero at the first step that fails.
"""
import sys

from playwright.sync_api import sync_playwright


def ok(what):
    print("ok", what, flush=True)


def main():
    url, expected = sys.argv[1], sys.argv[2]
    with sync_playwright() as p:
        browser = p.chromium.connect_over_cdp(url, timeout=30000)
        ok("connect_over_cdp")
        page = next(pg for pg in browser.contexts[0].pages if pg.url.startswith("data:"))
        assert page.title() == expected, page.title()
        ok("reads the kiosk page")
        assert page.evaluate("6 * 7") == 42
        ok("evaluate")
        page.goto("data:text/html,<title>driven</title><p id=p>by an agent</p>")
        assert page.title() == "driven" and page.text_content("#p") == "by an agent", page.title()
        ok("navigate")
        # A large answer crosses in one message (CDP never fragments): about 3 MB.
        big = page.evaluate("'x'.repeat(3 * 1024 * 1024)")
        assert len(big) == 3 * 1024 * 1024
        ok("large message")
        browser.close()  # over CDP: disconnects, the browser runs on
    ok("disconnected")


if __name__ == "__main__":
    main()
