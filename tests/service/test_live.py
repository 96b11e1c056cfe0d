"""GET / -- the live page: self-contained HTML, and a real Chromium watching it update.

The browser tests drive Debian's chromium through playwright's Python API (scripts/test
apt-installs it; ``playwright install`` is never used: no browser download).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

READ_KEY = "page-read-key-0123456789"
WRITE_KEY = "page-write-key-0123456789"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_page_is_one_self_contained_document(http: Any) -> None:
    r = http.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<script>" in page and "<style>" in page
    # Nothing fetched from anywhere: no external URL, no src/href to another resource.
    assert not re.search(r"https?://", page), re.findall(r"https?://\S+", page)
    assert not re.search(r"""\bsrc\s*=""", page)
    assert re.findall(r"""\bhref="([^"]*)\"""", page) == ["data:,"]
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert r.headers["referrer-policy"] == "no-referrer"  # the URL may carry ?token=
    assert http.head("/").status_code == 200


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 390, "height": 740})  # a phone
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield p
    context.close()
    # Connection errors while the server restarts are expected console noise; script errors
    # and CSP violations are not.
    assert not [e for e in errors if "WebSocket" not in e], errors


def _rows(page: Page) -> list[list[str]]:
    return [
        [c.strip() for c in row.locator("td").all_inner_texts()]
        for row in page.locator("#rows tr").all()
    ]


@pytest.mark.browser
def test_page_shows_scores_live_and_reconnects(rankd_server: Any, page: Page) -> None:
    srv = rankd_server()
    page.goto(f"{srv.url}/?board=x")
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    expect(page.locator("#board")).to_have_text("x")
    expect(page.locator("#rows")).to_contain_text("no scores yet")
    with srv.client() as http:
        for member, score in [("alice", 1200), ("bob", 900), ("carol", 1530)]:
            r = http.post("/v1/boards/x/scores", json={"member": member, "score": score})
            assert r.status_code == 200, r.text
        expect(page.locator("#rows")).to_contain_text("carol", timeout=10_000)
        expect(page.locator("#rows tr")).to_have_count(3)
        assert _rows(page) == [["1", "carol", "1530"], ["2", "alice", "1200"], ["3", "bob", "900"]]
        # An update highlights the rows that changed, and only those.
        http.post("/v1/boards/x/scores", json={"member": "bob", "score": 2000})
        expect(page.locator("#rows tr").first).to_contain_text("bob", timeout=10_000)
        changed = page.locator("#rows tr.changed td:nth-child(2)").all_inner_texts()
        assert sorted(changed) == ["alice", "bob", "carol"]  # all three moved a place
        http.post("/v1/boards/x/scores", json={"member": "dave", "score": 1})
        expect(page.locator("#rows tr")).to_have_count(4, timeout=10_000)
        assert page.locator("#rows tr.changed td:nth-child(2)").all_inner_texts() == ["dave"]
        expect(page.locator("#meta")).to_contain_text("4 entries")

    srv.restart()  # same port: the page must come back by itself
    with srv.client() as http:
        http.post("/v1/boards/x/scores", json={"member": "erin", "score": 5000})
    expect(page.locator("#rows")).to_contain_text("erin", timeout=20_000)
    expect(page.locator("#status")).to_have_text("live")


@pytest.mark.browser
def test_page_passes_its_token_through(rankd_server: Any, page: Page) -> None:
    srv = rankd_server(api_key=[f"{READ_KEY}:read", f"{WRITE_KEY}:write"])
    page.goto(f"{srv.url}/?board=locked")
    expect(page.locator("#status")).to_contain_text("unauthorized", timeout=10_000)
    page.goto(f"{srv.url}/?board=locked&token={READ_KEY}")
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    with srv.client(headers={"Authorization": f"Bearer {WRITE_KEY}"}) as http:
        r = http.post("/v1/boards/locked/scores", json={"member": "zoe", "score": 7})
        assert r.status_code == 200, r.text
    expect(page.locator("#rows")).to_contain_text("zoe", timeout=10_000)
    assert READ_KEY not in srv.logs()
