"""README's curl examples run verbatim against a fresh rankd, so they cannot rot.

The blocks are taken from README as they stand; only the address changes (``localhost:8000``
becomes the test server's port). ``curl`` is wrapped to fail on any 4xx/5xx
(``--fail-with-body``) except where a line asks for the status itself (``-w``), which the
test then checks; ``sleep`` is a no-op.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[2] / "README.md"

PRELUDE = """set -euo pipefail
curl() {
  case " $* " in
    *" -w "*) command curl -sS "$@" ;;
    *) command curl -sS --fail-with-body "$@" ;;
  esac
}
sleep() { :; }
"""


def _block_after(heading: str) -> str:
    text = README.read_text()
    start = text.index(heading)
    match = re.compile(r"```sh\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no sh block after {heading!r}"
    return match.group(1)


def _run(srv: Any, script: str) -> str:
    assert "localhost:8000" in script
    script = script.replace("localhost:8000", f"localhost:{srv.port}")
    r = subprocess.run(
        ["bash", "-c", PRELUDE + script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "NO_PROXY": "*"},
    )
    assert r.returncode == 0, f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout


def test_the_curl_tour_runs_verbatim(rankd_server: Any) -> None:
    srv = rankd_server()
    out = _run(srv, _block_after("## A tour with curl"))
    assert re.search(r"\b412\n", out), out  # the stale If-Match line
    assert '"revoked":' in out and '"status":"ready"' in out
    assert "Exception" not in srv.logs()


def test_the_first_run_loop_fills_the_live_board(rankd_server: Any) -> None:
    srv = rankd_server()
    _run(srv, _block_after("Post a few scores and watch it move"))
    with srv.client() as http:
        assert http.get("/v1/boards/global/top").json()["total"] > 0


def test_the_windows_example_runs_verbatim(rankd_server: Any) -> None:
    srv = rankd_server()
    out = _run(srv, _block_after("## Windows and periods (seasons)"))
    assert out.count('"windows":{"all":') == 2, out  # both writes answer per window
    assert '"window":"day","periods":[' in out and '"closed":false' in out
    with srv.client() as http:
        week = http.get("/v1/boards/arena/top", params={"window": "week"}).json()
        assert [e["member"] for e in week["entries"]][:1] == ["ann"]
        # bob's `at`, five minutes ago, is inside grace (the "all" window never turns)
        assert http.get("/v1/boards/arena/top").json()["total"] == 2
    assert "Exception" not in srv.logs()
