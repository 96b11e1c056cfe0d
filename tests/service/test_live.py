"""GET / -- the live page: self-contained HTML, and a real Chromium watching it update.

The browser tests drive Debian's chromium through playwright's Python API (scripts/test
apt-installs it; ``playwright install`` is never used: no browser download). Each state the
page can be in (live, a row that changed, find me, no such board, unauthorized, server
restarting, dark) is screenshotted at phone width into ``$RANKD_SCREENSHOTS`` (default: the
test's temporary directory) and the screenshot is checked: a PNG exactly one phone wide (the
page never overflows sideways) whose top-left pixel is the colour scheme's background.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

READ_KEY = "page-read-key-0123456789"
WRITE_KEY = "page-write-key-0123456789"
PHONE = {"width": 390, "height": 740}
BACKGROUND = {"light": (0xF7, 0xF7, 0xF5), "dark": (0x14, 0x14, 0x13)}  # --bg in style.css

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


def _open(browser: Browser, scheme: str = "light") -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, color_scheme=scheme, locale="en-US")  # type: ignore[arg-type]
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield p
    context.close()
    # Connection errors while the server restarts and the HTTP answers the page asks for and
    # expects (404: no such board; 401: no board list without a key) are console noise;
    # script errors and CSP violations are not.
    noise = ("WebSocket", "Failed to load resource")
    assert not [e for e in errors if not any(n in e for n in noise)], errors


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from _open(browser)


@pytest.fixture
def dark_page(browser: Browser) -> Iterator[Page]:
    yield from _open(browser, "dark")


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("RANKD_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def _first_pixel(png: bytes) -> tuple[int, int, int, int, int]:
    """(width, height, r, g, b) of a PNG's top-left pixel, without an imaging library.

    Whatever filter the first scanline uses, its first pixel is stored as is (the filters
    predict from the pixels to the left and above, which are zero there).
    """
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, width, height, depth, colour = 8, b"", 0, 0, 0, 0
    while at < len(png):
        (n,) = struct.unpack_from(">I", png, at)
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + n]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack_from(">IIBB", data)
        elif kind == b"IDAT":
            idat += data
        at += 12 + n
    assert depth == 8 and colour in (2, 6), (depth, colour)  # 8-bit RGB or RGBA
    raw = zlib.decompressobj().decompress(idat, 8)
    return width, height, raw[1], raw[2], raw[3]


def _shot(page: Page, shots: Path, name: str, scheme: str = "light") -> None:
    png = page.screenshot(path=shots / f"{name}.png", full_page=True)
    width, height, *rgb = _first_pixel(png)
    assert width == PHONE["width"], f"{name}: the page overflows a phone's width ({width} px)"
    assert height >= PHONE["height"]
    assert tuple(rgb) == BACKGROUND[scheme], (name, rgb)


def _rows(page: Page, body: str = "#rows") -> list[list[str]]:
    return [
        [c.strip() for c in row.locator("td").all_inner_texts()]
        for row in page.locator(f"{body} tr").all()
    ]


def _changed(page: Page) -> list[str]:
    return page.locator("#rows tr.changed").evaluate_all("rows => rows.map(r => r.dataset.member)")


@pytest.mark.browser
def test_page_shows_scores_live_and_reconnects(rankd_server: Any, page: Page, shots: Path) -> None:
    srv = rankd_server()
    page.goto(f"{srv.url}/?board=x")
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    expect(page.locator("#board")).to_have_text("x")
    expect(page.locator("#rows")).to_contain_text("no such board")  # nobody wrote to x yet
    expect(page.locator("#notice")).to_contain_text("There is no board named")
    _shot(page, shots, "no-such-board")
    with srv.client() as http:
        for member, score in [("alice", 1200), ("bob", 900), ("carol", 1530)]:
            r = http.post("/v1/boards/x/scores", json={"member": member, "score": score})
            assert r.status_code == 200, r.text
        expect(page.locator("#rows")).to_contain_text("carol", timeout=10_000)
        expect(page.locator("#rows tr")).to_have_count(3)
        expect(page.locator("#notice")).to_be_hidden()
        assert _rows(page) == [
            ["1", "carol", "1,530"],
            ["2", "alice", "1,200"],
            ["3", "bob", "900"],
        ]
        # bob climbs past both: only his row changed; the others just moved down a place.
        http.post("/v1/boards/x/scores", json={"member": "bob", "score": 2000})
        expect(page.locator("#rows tr").first).to_contain_text("bob", timeout=10_000)
        assert _changed(page) == ["bob"]
        _shot(page, shots, "row-changed")
        http.post("/v1/boards/x/scores", json={"member": "dave", "score": 1})
        expect(page.locator("#rows tr")).to_have_count(4, timeout=10_000)
        assert _changed(page) == ["dave"]
        expect(page.locator("#meta")).to_contain_text("4 entries")
        assert "seq" not in page.locator("#meta").inner_text()

    srv.stop(signal.SIGTERM)
    expect(page.locator("#status")).to_contain_text("server restarting", timeout=10_000)
    _shot(page, shots, "server-restarting")
    srv.restart()  # same port: the page must come back by itself
    with srv.client() as http:
        http.post("/v1/boards/x/scores", json={"member": "erin", "score": 5000})
    expect(page.locator("#rows")).to_contain_text("erin", timeout=20_000)
    expect(page.locator("#status")).to_have_text("live")


@pytest.mark.browser
def test_find_me_exact_int64_metadata_and_the_board_picker(
    rankd_server: Any, page: Page, shots: Path
) -> None:
    srv = rankd_server()
    big = 2**63 - 1  # a JavaScript number would show 9,223,372,036,854,775,808
    odd = 2**53 + 1  # the first integer a double cannot hold
    with srv.client() as http:
        r = http.post(
            "/v1/boards/event/scores:batch",
            json=[
                {"member": "zed", "score": big, "metadata": {"team": "red", "level": 12}},
                {"member": "yan", "score": odd},
                *({"member": f"p{i:02}", "score": 1000 * (40 - i)} for i in range(40)),
            ],
        )
        assert r.status_code == 200, r.text
        r = http.post("/v1/boards/other/scores", json={"member": "solo", "score": -1234567})
        assert r.status_code == 200, r.text
        page.goto(f"{srv.url}/?board=event")
        expect(page.locator("#status")).to_have_text("live", timeout=10_000)
        rows = _rows(page)
        assert rows[0] == ["1", "zed\nteam: red · level: 12", "9,223,372,036,854,775,807"]
        assert rows[1] == ["2", "yan", "9,007,199,254,740,993"]
        assert len(rows) == 10 and rows[9] == ["10", "p07", "33,000"]
        expect(page.locator("#meta")).to_contain_text("42 entries")
        _shot(page, shots, "live")

        # Find me: the entries around p20, kept highlighted as the board moves under it.
        page.locator("#me").fill("p20")
        page.locator("#find button").click()
        expect(page.locator("#around-title")).to_have_text("around p20 (#23)", timeout=10_000)
        assert [r[1] for r in _rows(page, "#around-rows")] == [
            *("p17", "p18", "p19", "p20", "p21", "p22", "p23"),
        ]
        assert page.locator("#around-rows tr.me").inner_text().split()[1] == "p20"
        assert "member=p20" in page.url
        r = http.post("/v1/boards/event/scores", json={"member": "p20", "score": 35_500})
        assert r.status_code == 200, r.text
        expect(page.locator("#around-title")).to_have_text("around p20 (#8)", timeout=10_000)
        expect(page.locator("#rows tr.me")).to_have_count(1)
        assert page.locator("#rows tr.me td.member").inner_text() == "p20"
        # Only p20 changed in the top 10: p08 left it, everyone from rank 8 on moved down one.
        assert _changed(page) == ["p20"]
        _shot(page, shots, "find-me")
        page.locator("#me").fill("nobody")
        page.locator("#find button").click()
        expect(page.locator("#around-rows")).to_contain_text("not on this board yet")

        # The picker lists the boards this credential reads; switching follows the URL.
        expect(page.locator("#picker-box")).to_be_visible()
        options = page.locator("#picker option").all_inner_texts()
        assert sorted(options) == ["event", "other"]
        page.locator("#picker").select_option("other")
        expect(page.locator("#board")).to_have_text("other")
        expect(page.locator("#rows")).to_contain_text("solo", timeout=10_000)
        assert _rows(page) == [["1", "solo", "-1,234,567"]]
        assert "board=other" in page.url


@pytest.mark.browser
def test_page_passes_its_token_through(rankd_server: Any, page: Page, shots: Path) -> None:
    srv = rankd_server(api_key=[f"{READ_KEY}:read", f"{WRITE_KEY}:write"])
    page.goto(f"{srv.url}/?board=locked")
    expect(page.locator("#status")).to_contain_text("unauthorized", timeout=10_000)
    expect(page.locator("#status")).to_contain_text("?token=")
    expect(page.locator("#picker-box")).to_be_hidden()  # no list without a credential
    _shot(page, shots, "unauthorized")
    page.goto(f"{srv.url}/?board=locked&token={READ_KEY}")
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    with srv.client(headers={"Authorization": f"Bearer {WRITE_KEY}"}) as http:
        r = http.post("/v1/boards/locked/scores", json={"member": "zoe", "score": 7})
        assert r.status_code == 200, r.text
    expect(page.locator("#rows")).to_contain_text("zoe", timeout=10_000)
    assert READ_KEY not in srv.logs()


@pytest.mark.browser
def test_dark_scheme_at_phone_width(rankd_server: Any, dark_page: Page, shots: Path) -> None:
    srv = rankd_server()
    with srv.client() as http:
        long_name = "a-member-id-that-is-long-enough-to-wrap-" * 3
        for member, score in [(long_name[:128], 10**15), ("b", 2)]:
            r = http.post("/v1/boards/night/scores", json={"member": member, "score": score})
            assert r.status_code == 200, r.text
    dark_page.goto(f"{srv.url}/?board=night&member=b")
    expect(dark_page.locator("#status")).to_have_text("live", timeout=10_000)
    expect(dark_page.locator("#around-rows tr.me")).to_have_count(1, timeout=10_000)
    background = dark_page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(20, 20, 19)"
    _shot(dark_page, shots, "dark", "dark")
