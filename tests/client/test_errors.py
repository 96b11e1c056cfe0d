"""Each exception class is raised for the answer a real rankd gives, with status, type, title,
detail (and Retry-After) carried over; the fallbacks for answers the tree does not name."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import rankd_client as rc
from rankd_client import NO_RETRY, Call, Client
from rankd_client.errors import error_class, from_response, parse_retry_after

URN = "urn:rankd:problem:"


def raised(cls: type[rc.ProblemError], kind: str, fn: Callable[[], object]) -> rc.ProblemError:
    with pytest.raises(cls) as info:
        fn()
    err = info.value
    assert type(err) is cls, (type(err), err)
    assert err.type == URN + kind, err
    assert err.title and err.detail and str(err.status) in str(err)
    return err


def test_client_errors_from_real_answers(client: Client, name: str) -> None:
    raised(rc.BadRequest, "bad-request", lambda: client.top(name, limit=0))
    raised(rc.BadRequest, "invalid-argument", lambda: client.post_score(name, "", 1))
    with pytest.raises(ValueError, match="JSON compliant"):
        client.post_score(name, "a", float("nan"))  # httpx refuses to encode it: never sent
    raised(rc.NotFound, "not-found", lambda: client.send(Call("GET", "/v1/no-such-route")))
    raised(rc.BoardNotFound, "board-not-found", lambda: client.get_board(name))
    client.post_score(name, "ann", 1)
    raised(rc.MemberNotFound, "member-not-found", lambda: client.member(name, "bob"))
    err = raised(rc.SessionNotFound, "session-not-found", lambda: client.get_session("x" * 43))
    assert "x" * 32 not in err.detail  # rankd never echoes a session id
    raised(
        rc.MethodNotAllowed,
        "method-not-allowed",
        lambda: client.send(Call("PATCH", f"/v1/boards/{name}")),
    )
    raised(rc.Conflict, "conflict", lambda: client.put_board(name, order="asc"))
    sid = client.create_session(user=name)["id"]
    client.touch_session(sid)
    raised(
        rc.PreconditionFailed,
        "precondition-failed",
        lambda: client.patch_session(sid, {"a": 1}, if_match=7),
    )
    items: list[Any] = [{"member": f"m{i}", "score": i} for i in range(1001)]
    raised(rc.PayloadTooLarge, "batch-too-large", lambda: client.post_batch(name, items))
    big = {"member": "a", "score": 1, "metadata": {"pad": "x" * 70_000}}
    raised(
        rc.PayloadTooLarge,
        "payload-too-large",
        lambda: client.send(Call("POST", f"/v1/boards/{name}/scores", body=big)),
    )
    text = Call("POST", f"/v1/boards/{name}/scores", headers={"Content-Type": "text/plain"})
    raised(rc.UnsupportedMediaType, "unsupported-media-type", lambda: client.send(text))
    # Every one is a ClientError and a RankdError: one except clause catches the family.
    with pytest.raises(rc.ClientError):
        client.get_board(name + "-missing")
    with pytest.raises(rc.RankdError):
        client.get_board(name + "-missing")


def test_auth_errors(keyed: Any, keys: dict[str, str], name: str) -> None:
    with Client(keyed.url, trust_env=False) as anonymous:
        raised(rc.Unauthorized, "unauthorized", lambda: anonymous.top(name))
    with Client(keyed.url, api_key="not-a-key-0123456789", trust_env=False) as wrong:
        raised(rc.Unauthorized, "unauthorized", lambda: wrong.top(name))
    with Client(keyed.url, api_key=keys["read"], trust_env=False) as reader:
        raised(rc.Forbidden, "forbidden", lambda: reader.post_score(name, "a", 1))
        raised(rc.Forbidden, "forbidden", lambda: reader.create_session())
    with Client(keyed.url, api_key=keys["admin"], trust_env=False) as admin:
        assert admin.post_score(name, "a", 1)["rank"] == 1
        assert admin.snapshot()["entries"] == 1


def test_insufficient_storage(rankd_server: Any, name: str) -> None:
    srv = rankd_server(max_boards=1)
    with Client(srv.url, trust_env=False) as c:
        c.put_board(name)
        err = raised(rc.InsufficientStorage, "insufficient-storage", lambda: c.put_board("other"))
        assert err.status == 507 and isinstance(err, rc.ServerError)
        assert c.post_score(name, "a", 1)["rank"] == 1  # the existing board still takes writes


def test_unavailable_when_the_server_is_at_its_connection_limit(rankd_server: Any) -> None:
    srv = rankd_server(max_connections=16, idle_timeout=60)  # 16: the smallest cap rankd takes
    with contextlib.ExitStack() as held:
        for _ in range(16):
            held.enter_context(socket.create_connection(("127.0.0.1", srv.port)))
        with Client(srv.url, retry=NO_RETRY, trust_env=False) as c:
            err = raised(rc.Unavailable, "too-many-connections", c.health)
    assert err.status == 503 and isinstance(err, rc.ServerError)


def test_transport_error_says_whether_the_request_left(rankd_server: Any) -> None:
    srv = rankd_server()
    srv.stop()
    with (
        Client(srv.url, retry=NO_RETRY, trust_env=False) as c,
        pytest.raises(rc.TransportError) as info,
    ):
        c.post_score("b", "a", 1)
    assert info.value.maybe_applied is False  # connection refused: nothing was sent
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (404, URN + "board-not-found", rc.BoardNotFound),
        (404, URN + "some-future-thing", rc.NotFound),  # unknown type: its status decides
        (400, URN + "limit-exceeded", rc.BadRequest),
        (408, URN + "request-timeout", rc.ClientError),  # status not in the tree: its class
        (418, "about:blank", rc.ClientError),
        (429, URN + "too-many-sessions", rc.TooManyRequests),
        (410, URN + "session-ended", rc.SessionEnded),
        (410, "about:blank", rc.Gone),
        (500, URN + "internal", rc.ServerError),
        (502, "about:blank", rc.ServerError),
        (503, URN + "shutting-down", rc.Unavailable),
    ],
)
def test_error_class_fallbacks(status: int, kind: str, expected: type[rc.ProblemError]) -> None:
    assert error_class(status, kind) is expected


def test_an_answer_that_is_not_a_problem() -> None:
    """A proxy in front of rankd may answer in HTML: still a typed error with the status."""
    response = httpx.Response(
        502, headers={"Content-Type": "text/html"}, content=b"<h1>Bad Gateway</h1>"
    )
    err = from_response(response)
    assert type(err) is rc.ServerError and err.status == 502
    assert err.type == "about:blank" and "Bad Gateway" in err.detail


def test_retry_after_forms() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None
    response = httpx.Response(
        503,
        headers={"Content-Type": "application/problem+json", "Retry-After": "1"},
        json={"type": URN + "out-of-memory", "title": "t", "status": 503, "detail": "d"},
    )
    err = from_response(response)
    assert type(err) is rc.Unavailable and err.retry_after == 1.0
