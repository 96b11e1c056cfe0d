"""Drive one endpoint with wrk and read back req/s, p50 and p99.

wrk (the Debian package) is the load generator because it is C + epoll: on a 2-core
box a Python generator would saturate a core and measure itself. Each workload is a
Lua script written to the run's temp dir:

* ``post_score``: ``POST /v1/boards/bench/scores`` with ``{"member", "score"}``; members
  are Zipf-like (log-uniform: member *i* is drawn with probability ∝ 1/(i+1)) over the
  preloaded board, so a few hot players write most often, as in a real game. The score
  is uniform in [0, 1e6) plus a per-thread drift, so hot members keep improving and the
  stream stays a mix of improving and non-improving ``best`` writes instead of decaying
  to all no-ops.
* ``get_member``: ``GET /v1/boards/bench/members/{m}`` with ``m`` uniform over the
  preloaded members (every lookup hits).
* ``get_top``: ``GET /v1/boards/bench/top?limit=10``.

Every script ends with a ``done`` hook that prints one ``WRKRESULT {json}`` line with
wrk's own counters; latencies are wrk's (microseconds, coordinated-omission unaware, as
wrk 4 is). Non-2xx answers count as errors and are reported, never hidden.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

BOARD = "bench"
SCORE_RANGE = 1_000_000


def member_name(i: int) -> str:
    return f"player:{i:07d}"


_PRELUDE = """
local thread_count = 0
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
end
function init(args)
  -- Each wrk thread has its own Lua state: seed apart or every thread sends the same stream.
  math.randomseed(%(seed)d + 7919 * (thread_id or 0))
end
local N = %(members)d
local LN = math.log(N + 1)
local function zipf_index()
  local i = math.floor(math.exp(math.random() * LN)) - 1
  if i >= N then i = N - 1 end
  return i
end
local function member(i) return string.format("player:%%07d", i) end
"""

_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKRESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"status_errors":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""

_SCRIPTS = {
    "post_score": """
local path = "/v1/boards/%(board)s/scores"
local headers = {["Content-Type"] = "application/json"}
local n = 0
function request()
  n = n + 1
  local body = string.format('{"member":"%%s","score":%%d}',
    member(zipf_index()), math.random(0, %(score_range)d - 1) + 10 * n)
  return wrk.format("POST", path, headers, body)
end
""",
    "get_member": """
local prefix = "/v1/boards/%(board)s/members/"
function request()
  return wrk.format("GET", prefix .. member(math.random(0, N - 1)))
end
""",
    "get_top": """
local path = "/v1/boards/%(board)s/top?limit=10"
function request()
  return wrk.format("GET", path)
end
""",
}

WORKLOADS = tuple(_SCRIPTS)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int

    @classmethod
    def parse(cls, stdout: str) -> WrkResult:
        lines = [ln for ln in stdout.splitlines() if ln.startswith("WRKRESULT ")]
        if not lines:
            raise RuntimeError(f"wrk printed no WRKRESULT line:\n{stdout[-2000:]}")
        raw = json.loads(lines[-1].removeprefix("WRKRESULT "))
        seconds = raw["duration_us"] / 1e6
        errors = sum(raw[k] for k in raw if k.endswith("_errors")) + raw["timeouts"]
        return cls(
            requests=raw["requests"],
            seconds=seconds,
            rps=raw["requests"] / seconds if seconds else 0.0,
            p50_ms=raw["p50_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            max_ms=raw["max_us"] / 1000,
            errors=errors,
        )


def write_script(workdir: Path, workload: str, members: int, seed: int = 1) -> Path:
    params = {
        "seed": seed,
        "members": max(members, 1),
        "board": BOARD,
        "score_range": SCORE_RANGE,
    }
    path = workdir / f"{workload}.lua"
    # _DONE is appended after formatting: its Lua format strings use % too.
    path.write_text((_PRELUDE + _SCRIPTS[workload]) % params + _DONE)
    return path


def run_wrk(
    script: Path, port: int, *, duration: float, connections: int, threads: int
) -> WrkResult:
    """One bounded wrk run against loopback; raises if wrk fails or overruns."""
    argv = [
        "wrk",
        f"--threads={threads}",
        f"--connections={max(connections, threads)}",
        f"--duration={max(1, round(duration))}s",
        "--timeout=5s",
        f"--script={script}",
        f"http://127.0.0.1:{port}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return WrkResult.parse(proc.stdout)
