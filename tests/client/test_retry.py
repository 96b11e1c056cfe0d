"""Retries, with the faults made for real: a killed and restarted rankd, an answer lost after
rankd applied the write (a proxy that swallows it), a server at its connection limit (503).

The promise under test: a call is sent again only when repeating it cannot change the outcome.
On a ``sum`` board a repeated score POST would count twice, so after every fault the board's
total must equal exactly the writes rankd acknowledged or applied once.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rankd_client import (
    BoardNotFound,
    Client,
    MemberNotFound,
    Retry,
    TransportError,
    Unavailable,
)

# Patient enough to span a restart (about a second here), quick between tries.
PATIENT = Retry(attempts=400, backoff=0.02, max_backoff=0.1)


class SwallowingProxy:
    """A TCP proxy to rankd that, while armed, reads rankd's answer and hangs up instead of
    passing it on: the request was applied, the client never hears so (a lost answer)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.swallowed = 0
        self.requests = 0
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets += [conn, up]
            self._spawn(self._pump, conn, up, False)
            self._spawn(self._pump, up, conn, True)

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not answers and data.split(b" ", 1)[0] in (b"GET", b"POST", b"DELETE", b"PUT"):
                    self.requests += 1
                if answers and self.armed.is_set():
                    self.armed.clear()
                    self.swallowed += 1
                    break
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        # shutdown() wakes a thread blocked in accept()/recv() on the socket; close() does not.
        for s in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def proxy(server: Any) -> Iterator[SwallowingProxy]:
    p = SwallowingProxy(server.port)
    yield p
    p.close()


def test_a_lost_answer_to_a_score_post_is_never_resent(
    server: Any, proxy: SwallowingProxy, name: str
) -> None:
    with Client(f"http://127.0.0.1:{proxy.port}", retry=PATIENT, trust_env=False) as c:
        c.put_board(name, update="sum")
        c.post_score(name, "ann", 10)
        before = proxy.requests
        proxy.armed.set()
        with pytest.raises(TransportError) as info:
            c.post_score(name, "ann", 5)
        assert info.value.maybe_applied is True  # it reached rankd: it may have counted
        assert proxy.swallowed == 1 and proxy.requests == before + 1  # sent once, not again
        # rankd applied it exactly once: 10 + 5, not 10 + 5 + 5.
        assert c.member(name, "ann")["score"] == 15


def test_a_get_whose_answer_was_lost_is_sent_again(
    server: Any, proxy: SwallowingProxy, name: str
) -> None:
    with Client(f"http://127.0.0.1:{proxy.port}", retry=PATIENT, trust_env=False) as c:
        c.post_score(name, "ann", 7)
        before = proxy.requests
        proxy.armed.set()
        assert c.member(name, "ann")["score"] == 7
        assert proxy.swallowed == 1 and proxy.requests == before + 2
        # PUT of a board's options is idempotent too.
        proxy.armed.set()
        assert c.put_board(name, update="sum")["update"] == "sum"
        assert proxy.swallowed == 2


def test_a_delete_whose_answer_was_lost_is_done_not_not_found(
    server: Any, proxy: SwallowingProxy, name: str
) -> None:
    """The retry of a DELETE finds nothing (the first try deleted it): that is success."""
    with Client(f"http://127.0.0.1:{proxy.port}", retry=PATIENT, trust_env=False) as c:
        c.post_score(name, "ann", 1)
        c.post_score(name, "bob", 2)
        sid = c.create_session(user=name)["id"]
        for delete in (
            lambda: c.delete_member(name, "ann"),
            lambda: c.delete_session(sid),
            lambda: c.drop_board(name),
        ):
            before = proxy.requests
            proxy.armed.set()
            assert delete() is None
            assert proxy.requests == before + 2  # the lost try, then the 404 that means done
        assert c.user_sessions(name)["sessions"] == []
        with pytest.raises(BoardNotFound):
            c.get_board(name)
        with pytest.raises(MemberNotFound):  # without a lost answer, 404 is still an error
            c.post_score(name, "cy", 1)
            c.delete_member(name, "ann")


def test_across_a_restart_a_get_is_retried_and_a_score_post_is_not(rankd_server: Any) -> None:
    srv = rankd_server(fsync="always")
    with Client(srv.url, retry=PATIENT, trust_env=False) as c:
        c.put_board("sums", update="sum")
        c.post_score("sums", "ann", 10)

        srv.stop(signal.SIGKILL)
        restart = threading.Thread(target=srv.start)
        began = time.monotonic()
        restart.start()  # the same port and data; listening about a second from now
        try:
            # While rankd is down: a score POST fails at once; PATIENT would have carried it
            # over the restart, and then a lost-answer retry could count twice.
            with pytest.raises(TransportError) as info:
                c.post_score("sums", "ann", 5)
            assert info.value.maybe_applied is False
            assert time.monotonic() - began < 0.5
            # A GET waits the restart out under the same policy.
            assert c.member("sums", "ann")["score"] == 10
        finally:
            restart.join()
        assert c.member("sums", "ann")["score"] == 10  # the refused POST never landed


def test_503_is_retried_for_a_get_and_not_for_a_score_post(rankd_server: Any, name: str) -> None:
    srv = rankd_server(max_connections=16, idle_timeout=60)
    with Client(srv.url, trust_env=False) as c:
        c.post_score(name, "ann", 1)  # closed: its pooled connection leaves the 16 slots free
    with Client(srv.url, retry=PATIENT, trust_env=False) as c:
        held = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(16)]
        try:
            with pytest.raises(Unavailable) as info:
                c.post_score(name, "ann", 1)
            assert info.value.type == "urn:rankd:problem:too-many-connections"
            release = threading.Timer(0.3, lambda: [s.close() for s in held])  # type: ignore[func-returns-value]
            release.start()
            began = time.monotonic()
            assert c.member(name, "ann")["score"] == 1  # retried until a slot came free
            assert time.monotonic() - began >= 0.25
            release.join()
        finally:
            for s in held:
                s.close()


def test_the_retry_policy() -> None:
    policy = Retry(attempts=3, backoff=0.1, max_backoff=0.15)
    lost = TransportError("x", maybe_applied=True)
    busy = Unavailable(503, "urn:rankd:problem:unavailable", "t", "d")
    assert policy.delay(False, 0, lost) is None  # never for a call that is not idempotent
    assert 0.05 <= (policy.delay(True, 0, lost) or 0) <= 0.1
    assert 0.075 <= (policy.delay(True, 1, busy) or 0) <= 0.15  # capped at max_backoff
    assert policy.delay(True, 2, lost) is None  # three tries in all
    told = Unavailable(503, "urn:rankd:problem:out-of-memory", "t", "d", retry_after=0.1)
    assert policy.delay(True, 0, told) == 0.1  # Retry-After replaces the backoff
    too_long = Unavailable(503, "urn:rankd:problem:out-of-memory", "t", "d", retry_after=60)
    assert policy.delay(True, 0, too_long) is None  # longer than the policy allows: raise
    assert Retry(attempts=None).exhausted(10**6) is False
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
