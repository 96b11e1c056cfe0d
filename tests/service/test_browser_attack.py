"""A hostile page in a real Chromium against a real rankd without keys (protected mode).

Two loopback origins: rankd at ``http://127.0.0.1:P`` and a tiny ``http.server`` at
``http://127.0.0.1:A`` (the attacker's site, or, when listed in ``--cors-origins``, a
partner's). Chromium is started with ``--host-resolver-rules`` mapping ``evil.example`` to
127.0.0.1, which is exactly where a DNS-rebinding attack ends: a page on evil.example:P whose
requests reach rankd as same-origin requests.

Every attack asserts two things: the request really reached rankd and was refused there (the
per-route status counters in /metrics), and rankd's state did not change (board, sessions,
data directory). The same-origin live page and an allowed origin keep working.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.service.test_live import CHROMIUM_ARGS

pytestmark = pytest.mark.browser

ATTACKER_PAGE = b"<!doctype html><title>a page on another site</title><p>hello"

# Runs inside the hostile page: every way a page can try to change rankd without a key.
ATTACK = """async (rankd) => {
  const out = {};
  const attempt = async (name, url, init) => {
    try { const r = await fetch(rankd + url, init); out[name] = r.type + " " + r.status; }
    catch (e) { out[name] = "blocked: " + e.message; }
  };
  const score = JSON.stringify({member: "mallory", score: 1000000});
  // The hole of issue #13: a "simple" request, so no preflight, with JSON in a text/plain body.
  await attempt("score no-cors", "/v1/boards/victim/scores",
    {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: score});
  await attempt("session no-cors", "/v1/sessions",
    {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
     body: JSON.stringify({user: "mallory"})});
  await attempt("empty session no-cors", "/v1/sessions", {method: "POST", mode: "no-cors"});
  await attempt("snapshot no-cors", "/v1/admin/snapshot", {method: "POST", mode: "no-cors"});
  // A proper JSON request needs a preflight, which no rankd answers for this origin.
  await attempt("score cors", "/v1/boards/victim/scores",
    {method: "POST", headers: {"Content-Type": "application/json"}, body: score});
  await attempt("drop cors", "/v1/boards/victim", {method: "DELETE"});
  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(rankd.replace("http:", "ws:") + "/v1/ws");
    ws.onopen = () => {
      ws.send(JSON.stringify({op: "score", id: "x", board: "victim", member: "mallory",
                              score: 1000000}));
      resolve("open");
    };
    ws.onclose = (e) => resolve("closed " + e.code);
  });
  return out;
}"""

FORM = """(rankd) => {
  const form = document.createElement("form");
  form.method = "POST";
  form.enctype = "text/plain";
  form.action = rankd + "/v1/boards/victim/scores";
  const field = document.createElement("input");
  field.name = '{"member":"mallory","score":1000000,"x":"';
  field.value = '"}';
  form.append(field);
  document.body.append(form);
  form.submit();
}"""


class _Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(ATTACKER_PAGE)))
        self.end_headers()
        self.wfile.write(ATTACKER_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[int]:
    """The other origin: a static page on 127.0.0.1 at a port of its own."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def _refusals(http: httpx.Client) -> dict[tuple[str, str, str], int]:
    """rankd_http_requests_total by (method, route, status), read from /metrics."""
    counts: dict[tuple[str, str, str], int] = {}
    for labels, value in re.findall(
        r"^rankd_http_requests_total\{(.*)\} (\S+)$", http.get("/metrics").text, re.M
    ):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        counts[(label["method"], label["route"], label["status"])] = int(float(value))
    return counts


def _state(http: httpx.Client, data_dir: Path) -> tuple[Any, ...]:
    top = http.get("/v1/boards/victim/top").json()
    sessions = re.search(r"^rankd_sessions ([0-9.e+]+)$", http.get("/metrics").text, re.M)
    assert sessions is not None
    files = sorted((p.name, p.stat().st_size) for p in data_dir.iterdir() if "snap" in p.name)
    return top["total"], top["entries"], float(sessions.group(1)), files


def test_a_foreign_page_cannot_change_anything(rankd_server: Any, site: int, page: Page) -> None:
    srv = rankd_server(snapshot_interval=0)
    with srv.client() as http:
        r = http.post("/v1/boards/victim/scores", json={"member": "alice", "score": 10})
        assert r.status_code == 200, r.text
        before = _state(http, srv.data_dir)
        counted = _refusals(http)

        page.goto(f"http://127.0.0.1:{site}/")
        out = page.evaluate(ATTACK, srv.url)
        # Fetch hides a no-cors answer from the page; the server's counters show the refusals.
        assert out["score no-cors"] == "opaque 0", out
        assert out["score cors"].startswith("blocked") and out["drop cors"].startswith("blocked")
        assert out["ws"].startswith("closed"), out  # never "open": refused before the upgrade

        # The classic CSRF: an HTML form (text/plain, no preflight ever), navigating away.
        with page.expect_response(lambda r: "/scores" in r.url) as form:
            page.evaluate(FORM, srv.url)
        assert form.value.status == 403

        assert _state(http, srv.data_dir) == before
        counts = _refusals(http)
        new = {k: n - counted.get(k, 0) for k, n in counts.items() if n != counted.get(k, 0)}
        writes = {k: n for k, n in new.items() if k[0] != "GET"}
        assert writes == {
            ("POST", "/v1/boards/{board}/scores", "403"): 2,  # the no-cors fetch and the form
            ("POST", "/v1/sessions", "403"): 2,
            ("POST", "/v1/admin/snapshot", "403"): 1,
            ("OPTIONS", "unmatched", "405"): 2,  # the preflights of the JSON POST and DELETE
        }, new
    assert "refused a WebSocket handshake" in srv.logs()


def test_the_same_origin_live_page_still_works(rankd_server: Any, page: Page) -> None:
    srv = rankd_server()
    page.goto(f"{srv.url}/?board=home")
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    # A script of the page itself writes: its Origin is rankd's own.
    status = page.evaluate(
        """async () => (await fetch("/v1/boards/home/scores", {method: "POST",
             headers: {"Content-Type": "application/json"},
             body: JSON.stringify({member: "own", score: 3})})).status"""
    )
    assert status == 200
    expect(page.locator("#rows")).to_contain_text("own", timeout=10_000)


def test_an_allowed_origin_passes_preflight_and_writes(
    rankd_server: Any, site: int, page: Page
) -> None:
    partner = f"http://127.0.0.1:{site}"
    srv = rankd_server(cors_origins=partner)
    page.goto(f"{partner}/")
    result = page.evaluate(
        """async (rankd) => {
          const r = await fetch(rankd + "/v1/boards/partner/scores", {method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({member: "pat", score: 7})});
          const s = await fetch(rankd + "/v1/sessions", {method: "POST",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify({user: "pat"})});
          const ws = await new Promise((resolve) => {
            const sock = new WebSocket(rankd.replace("http:", "ws:") + "/v1/ws");
            sock.onopen = () => sock.send(JSON.stringify(
              {op: "subscribe", id: "t", board: "partner", top: 3}));
            sock.onmessage = (e) => { resolve(JSON.parse(e.data)); sock.close(); };
            sock.onclose = (e) => resolve("closed " + e.code);
          });
          return {score: await r.json(), session: s.status, etag: s.headers.get("ETag"), ws};
        }""",
        srv.url,
    )
    assert result["score"]["member"] == "pat" and result["score"]["rank"] == 1, result
    assert result["session"] == 201 and result["etag"] == '"1"'  # exposed to the partner
    assert result["ws"]["type"] == "top" and result["ws"]["total"] == 1, result
    # The same server under another name is another origin, and it is not listed.
    page.goto(f"http://localhost:{site}/")
    out = page.evaluate(ATTACK, srv.url)
    assert out["score cors"].startswith("blocked") and out["ws"].startswith("closed"), out
    with srv.client() as http:
        assert http.get("/v1/boards/victim/top").status_code == 404


def test_dns_rebinding_is_refused_in_protected_mode(rankd_server: Any, page: Page) -> None:
    srv = rankd_server()
    with srv.client() as http:
        http.post("/v1/boards/victim/scores", json={"member": "alice", "score": 10})
    # evil.example now resolves to 127.0.0.1: the page and rankd share an origin.
    page.goto(f"http://evil.example:{srv.port}/?board=victim")
    expect(page.locator("#status")).to_contain_text("offline", timeout=10_000)
    answers = page.evaluate(
        """async () => {
          const w = await fetch("/v1/boards/victim/scores", {method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({member: "mallory", score: 1000000})});
          const r = await fetch("/v1/boards/victim/top");
          return [w.status, (await w.json()).type, r.status, await r.text()];
        }"""
    )
    assert answers[:3] == [403, "urn:rankd:problem:host-not-allowed", 403], answers
    assert "alice" not in answers[3]  # nothing to read either
    with srv.client() as http:
        assert http.get("/v1/boards/victim/top").json()["total"] == 1
