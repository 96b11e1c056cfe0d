"""Realistic mixed load on a running rankd: game clients, a web app, live watchers.

    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 30s \\
        --host http://127.0.0.1:8080 --csv loadtest/out/run

Where bench_http.py hammers one endpoint at a time to compare stacks, this file mixes
what real users do so the numbers answer "does rankd keep up with a game + a website":

* **GameClient** (weight 6): a player. Writes scores mostly to a few hot boards
  (``global`` 60 %, ``weekly`` 25 %, ``daily`` 10 %, a tail of ``level-N`` boards), half
  for itself and half for other players drawn Zipf-like (player *i* ∝ 1/(i+1)), so a few
  members are hot. Scores drift upward with time, so the top 10 keeps changing and the
  WebSocket hub has something to fan out. Reads its own rank, the top 10, and who is
  around it.
* **WebApp** (weight 3): a website's session store: create, get (refreshes the idle
  deadline), PATCH with ``If-Match``, touch, delete, and now and then "log out
  everywhere" (revoke every session of the user). Session ids never appear in stats
  names or failure messages.
* **RankWatcher** (weight 1): a WebSocket client (``/v1/ws``) that subscribes to its own
  rank and to the top 10 of the hot board and reports two delivery delays as locust
  "WS" requests:
    - ``rank frame delay``: from sending its own ``score`` op to the first ``rank`` frame
      that shows that score (frames carry no timestamp, so the watcher times its own
      writes; coalescing may fold several writes into one frame, each is timed to it);
    - ``top frame delay``: GameClient writes carry ``metadata.t`` (the wall clock at
      send); when a ``top`` frame shows an entry whose ``t`` is new, now - t is the
      write-to-watcher fan-out delay (same host, so one clock).
  Plus ``ws score ack`` (the op's round trip). Error frames count as failures, and so
  does the server closing the socket (``closed by server``, with the close code: rankd
  closes a watcher that cannot keep up); the watcher then reconnects on its next tick.

locust has no WebSocket user; this one uses ``websocket-client`` (it comes with locust,
via python-socketio's client extra), whose blocking socket calls gevent has patched by
the time locust is imported, so one receiver greenlet per watcher costs no thread.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from typing import Any

import gevent
import orjson
import websocket
from locust import FastHttpUser, User, between, task

HOT_BOARDS = ("global", "weekly", "daily")
HOT_WEIGHTS = (60, 25, 10)
TAIL_BOARDS = 20  # level-0 .. level-19 share the remaining 5 %
PLAYERS = 100_000
_ids = itertools.count()
_T0 = time.time()


def _uid(prefix: str) -> str:
    # Unique across users and across locust worker processes of one run.
    return f"{prefix}{os.getpid()}-{next(_ids)}"


def zipf_player(rng: random.Random) -> str:
    i = min(int(math.exp(rng.random() * math.log(PLAYERS + 1))) - 1, PLAYERS - 1)
    return f"player:{i:07d}"


def pick_board(rng: random.Random) -> str:
    if rng.random() < 0.95:
        return rng.choices(HOT_BOARDS, HOT_WEIGHTS)[0]
    return f"level-{rng.randrange(TAIL_BOARDS)}"


def drifting_score(rng: random.Random) -> int:
    # +100 per second of test: later writes tend to beat earlier ones, like a live season.
    return int((time.time() - _T0) * 100) + rng.randrange(10_000)


class GameClient(FastHttpUser):
    weight = 6
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.me = _uid("gc")
        self.home = self.rng.choices(HOT_BOARDS, HOT_WEIGHTS)[0]
        self._write(self.home, self.me)  # so "my rank" exists from the first read

    def _write(self, board: str, member: str) -> None:
        body = {
            "member": member,
            "score": drifting_score(self.rng),
            "metadata": {"t": time.time()},
        }
        self.client.post(f"/v1/boards/{board}/scores", json=body, name="/v1/boards/[b]/scores")

    @task(5)
    def post_score(self) -> None:
        if self.rng.random() < 0.5:
            self._write(self.home, self.me)
        else:
            self._write(pick_board(self.rng), zipf_player(self.rng))

    @task(3)
    def my_rank(self) -> None:
        self.client.get(
            f"/v1/boards/{self.home}/members/{self.me}", name="/v1/boards/[b]/members/[m]"
        )

    @task(2)
    def top10(self) -> None:
        board = pick_board(self.rng)
        # A tail board may not exist yet: 404 there is an answer, not a failure.
        with self.client.get(
            f"/v1/boards/{board}/top?limit=10",
            name="/v1/boards/[b]/top",
            catch_response=True,
        ) as resp:
            if resp.status_code in (200, 404):
                resp.success()

    @task(1)
    def around_me(self) -> None:
        self.client.get(
            f"/v1/boards/{self.home}/members/{self.me}/around?radius=5",
            name="/v1/boards/[b]/members/[m]/around",
        )


class WebApp(FastHttpUser):
    weight = 3
    wait_time = between(0.1, 1.0)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.user = _uid("user")
        self.sessions: dict[str, int] = {}  # id -> version

    def _session(self) -> str | None:
        if not self.sessions:
            self.create()
        return self.rng.choice(list(self.sessions)) if self.sessions else None

    def _expect(self, resp: Any, status: int, what: str) -> bool:
        # Our own messages: the default ones quote the URL, which holds the session id.
        if resp.status_code != status:
            resp.failure(f"{what}: expected {status}, got {resp.status_code}")
            return False
        resp.success()
        return True

    @task(2)
    def create(self) -> None:
        body = {"user": self.user, "data": {"cart": [], "theme": "dark"}, "ttl": 600}
        with self.client.post(
            "/v1/sessions", json=body, name="/v1/sessions", catch_response=True
        ) as resp:
            if self._expect(resp, 201, "create session"):
                session = resp.json()
                self.sessions[session["id"]] = session["version"]

    @task(6)
    def get(self) -> None:
        sid = self._session()
        if sid is None:
            return
        with self.client.get(
            f"/v1/sessions/{sid}", name="/v1/sessions/[id]", catch_response=True
        ) as resp:
            if self._expect(resp, 200, "get session"):
                self.sessions[sid] = resp.json()["version"]

    @task(3)
    def patch(self) -> None:
        sid = self._session()
        if sid is None:
            return
        body = {"data": {"cart": [self.rng.randrange(1000)], "last_page": "/shop"}}
        with self.client.request(
            "PATCH",
            f"/v1/sessions/{sid}",
            json=body,
            headers={"If-Match": str(self.sessions[sid])},
            name="/v1/sessions/[id] PATCH",
            catch_response=True,
        ) as resp:
            if self._expect(resp, 200, "patch session"):
                self.sessions[sid] = resp.json()["version"]

    @task(1)
    def touch(self) -> None:
        sid = self._session()
        if sid is None:
            return
        with self.client.post(
            f"/v1/sessions/{sid}/touch", name="/v1/sessions/[id]/touch", catch_response=True
        ) as resp:
            self._expect(resp, 200, "touch session")

    @task(1)
    def delete(self) -> None:
        sid = self._session()
        if sid is None:
            return
        with self.client.delete(
            f"/v1/sessions/{sid}", name="/v1/sessions/[id] DELETE", catch_response=True
        ) as resp:
            self._expect(resp, 204, "delete session")
        self.sessions.pop(sid, None)

    @task(1)
    def logout_everywhere(self) -> None:
        if self.rng.random() >= 0.2:  # rarer than any other action
            return
        with self.client.delete(
            f"/v1/users/{self.user}/sessions",
            name="/v1/users/[u]/sessions DELETE",
            catch_response=True,
        ) as resp:
            if resp.status_code in (200, 204):
                resp.success()
            else:
                resp.failure(f"revoke all: expected 200/204, got {resp.status_code}")
        self.sessions.clear()


class RankWatcher(User):
    weight = 1
    wait_time = between(0.2, 0.5)
    _MAX_PENDING = 1000  # bound the bookkeeping if frames stop coming

    def on_start(self) -> None:
        self.rng = random.Random()
        self.me = _uid("watcher")
        self.board = HOT_BOARDS[0]
        self.score = 0
        self.ops = itertools.count()
        self.sent_at: dict[str, float] = {}  # op id -> send time (ack timing)
        self.pending: dict[int, float] = {}  # score -> send time (rank frame timing)
        self.seen_t: dict[str, float] = {}  # member -> newest metadata.t seen in a top frame
        self.started = time.time()
        self.stopping = False
        self.ws: websocket.WebSocket | None = None
        self.receiver: gevent.Greenlet | None = None
        self._connect()

    def _connect(self) -> bool:
        """Open the socket and subscribe; a failure is reported, and retried by the task."""
        url = (self.host or "").replace("http://", "ws://").replace("https://", "wss://") + "/v1/ws"
        t0 = time.perf_counter()
        try:
            ws = websocket.create_connection(url, timeout=10)
            for sub in (
                {"op": "subscribe", "id": "me", "board": self.board, "member": self.me},
                {"op": "subscribe", "id": "top", "board": self.board, "top": 10},
            ):
                ws.send(orjson.dumps(sub).decode())
        except Exception as exc:
            self._report("connect", t0, 0, exc)
            return False
        self._report("connect", t0, 0)
        self.ws = ws
        self.receiver = gevent.spawn(self._receive_loop, ws)
        return True

    def on_stop(self) -> None:
        self.stopping = True
        if self.receiver is not None:
            self.receiver.kill(block=False)
        if self.ws is not None:
            self.ws.close()

    def _report(self, name: str, t0: float, length: int, exc: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - t0) * 1000,
            response_length=length,
            exception=exc,
            context={},
        )

    @task
    def write_own_score(self) -> None:
        if self.ws is None and not self._connect():
            return  # like a real client: retry on the next tick
        self.score += 1 + self.rng.randrange(5)
        op_id = f"r{next(self.ops)}"
        now = time.perf_counter()
        if len(self.pending) >= self._MAX_PENDING:
            self.pending.clear()
            self.sent_at.clear()
        self.pending[self.score] = now
        self.sent_at[op_id] = now
        frame = {"op": "score", "id": op_id, "board": self.board, "member": self.me}
        ws = self.ws
        assert ws is not None
        try:
            ws.send(orjson.dumps({**frame, "score": self.score}).decode())
        except Exception as exc:
            self._report("send", now, 0, exc)
            self._drop(ws)

    def _drop(self, ws: websocket.WebSocket) -> None:
        if self.ws is ws:
            self.ws = None  # the next task reconnects
        ws.close()

    def _receive_loop(self, ws: websocket.WebSocket) -> None:
        abnf = websocket.ABNF
        while True:
            try:
                opcode, data = ws.recv_data(control_frame=True)
            except websocket.WebSocketConnectionClosedException:
                opcode, data = abnf.OPCODE_CLOSE, b""
            except Exception as exc:
                self._report("recv", time.perf_counter(), 0, exc)
                self._drop(ws)
                return
            if opcode == abnf.OPCODE_CLOSE:
                if not self.stopping:
                    # rankd closes slow consumers (1013/1008): a watcher that could not
                    # keep up is a failure of the run, not a quiet end.
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    reason = data[2:].decode(errors="replace")
                    why = RuntimeError(f"server closed the WebSocket: {code} {reason}")
                    self._report("closed by server", time.perf_counter(), 0, why)
                self._drop(ws)
                return
            if opcode in (abnf.OPCODE_TEXT, abnf.OPCODE_BINARY):
                self._on_frame(orjson.loads(data), len(data))

    def _on_frame(self, frame: dict[str, Any], length: int) -> None:
        kind = frame.get("type")
        if kind == "ack":
            t0 = self.sent_at.pop(str(frame.get("id")), None)
            if t0 is not None:
                self._report("ws score ack", t0, length)
        elif kind == "rank" and frame.get("member") == self.me:
            score = frame.get("score")
            if isinstance(score, int):
                for s in [s for s in self.pending if s <= score]:
                    self._report("rank frame delay", self.pending.pop(s), length)
        elif kind == "top":
            self._on_top(frame, length)
        elif kind == "error":
            self._report(
                "error frame",
                time.perf_counter(),
                length,
                RuntimeError(f"{frame.get('status')}: {frame.get('detail')}"),
            )

    def _on_top(self, frame: dict[str, Any], length: int) -> None:
        now = time.time()
        for entry in frame.get("entries", []):
            meta = entry.get("metadata") or {}
            t = meta.get("t")
            member = entry.get("member")
            # Only writes made after we subscribed: the first full frame shows old ones.
            if not isinstance(t, float) or t < self.started or self.seen_t.get(member) == t:
                continue
            if len(self.seen_t) > 10_000:
                self.seen_t.clear()  # bound memory on a long run; at worst one re-count
            self.seen_t[member] = t
            self.environment.events.request.fire(
                request_type="WS",
                name="top frame delay",
                response_time=max(0.0, now - t) * 1000,
                response_length=length,
                exception=None,
                context={},
            )
