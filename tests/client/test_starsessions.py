"""rankd as a FastAPI app's session store (rankd_client.starsessions), end to end.

The app is README's "Use it from your app" example as written, served by uvicorn on a free
port; browsers are httpx clients with their own cookie jars; rankd is a real server with keys.
Each test reads rankd's own view of the sessions (by id and by user) beside the app's answers:
log in (the id rotates, the data stays), read and write, regenerate the id, log out, log out
everywhere, expire, and a logout or a logout everywhere racing a request that saves the
session -- which must not bring it back.
"""

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import Request
from rankd_client import Client, SessionNotFound
from starsessions import regenerate_session_id

from tests.client.apps import Served, run_block
from tests.servers import RankdServer

ADMIN = "starsessions-admin-0123456789"
COOKIE = "session"


@pytest.fixture(scope="module")
def rankd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankdServer]:
    srv = RankdServer(tmp_path_factory.mktemp("starsessions"), {"api_key": [f"{ADMIN}:admin"]})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def admin(rankd: RankdServer) -> Iterator[Client]:
    with Client(rankd.url, api_key=ADMIN, trust_env=False) as c:
        yield c


class Gates:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


def _app(rankd: RankdServer, gates: Gates) -> dict[str, Any]:
    """README's app, plus two routes the tests need: a save that waits, an id regeneration."""
    ns = run_block(1, rankd.url, ADMIN)
    app = ns["app"]

    async def slow_cart(request: Request, item: str) -> dict:
        gates.entered.set()  # the session is loaded (SessionAutoloadMiddleware)
        await anyio.to_thread.run_sync(gates.release.wait, 10)
        request.session["cart"] = [*request.session.get("cart", []), item]
        return {"cart": request.session["cart"]}

    async def regenerate(request: Request) -> dict:
        regenerate_session_id(request)
        return {}

    app.add_api_route("/slow-cart/{item}", slow_cart, methods=["POST"])
    app.add_api_route("/regenerate", regenerate, methods=["POST"])
    return ns


@pytest.fixture
def site(rankd: RankdServer) -> Iterator[tuple[str, Gates, dict[str, Any]]]:
    gates = Gates()
    ns = _app(rankd, gates)
    with Served(ns["app"]) as url:
        yield url, gates, ns


def browser(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, trust_env=False, timeout=20)


def user() -> str:
    return "u" + uuid.uuid4().hex[:12]


def _set(b: httpx.Client, sid: str) -> None:
    """Present ``sid`` as this browser's session cookie (a copied or stale cookie)."""
    b.cookies.clear()
    b.cookies.set(COOKIE, sid, domain="127.0.0.1", path="/")


def _sid(b: httpx.Client) -> str:
    value = b.cookies.get(COOKIE)
    assert value, "no session cookie"
    return value


def test_login_rotates_read_write_regenerate_logout(site, admin: Client) -> None:
    url, _, _ = site
    ann = user()
    with browser(url) as b:
        assert b.get("/me").json() == {"user": None, "cart": []}
        assert COOKIE not in b.cookies  # an empty session is never stored
        assert b.post("/cart/apple").json() == {"cart": ["apple"]}
        anonymous = _sid(b)
        stored = admin.get_session(anonymous, touch=False)
        assert stored["user"] is None and stored["data"]["cart"] == ["apple"]
        assert "rankd_user" not in str(stored["data"]) and anonymous not in str(stored["data"])

        assert b.post("/login", params={"user": ann}).json() == {"user": ann}
        logged_in = _sid(b)
        assert logged_in != anonymous
        with pytest.raises(SessionNotFound):  # the pre-login id is dead: no fixation
            admin.get_session(anonymous, touch=False)
        assert [s["id"] for s in admin.user_sessions(ann)["sessions"]] == [logged_in]
        assert b.get("/me").json() == {"user": ann, "cart": ["apple"]}

        assert b.post("/cart/pear").json() == {"cart": ["apple", "pear"]}
        assert _sid(b) == logged_in
        stored = admin.get_session(logged_in, touch=False)
        assert stored["user"] == ann and stored["data"]["cart"] == ["apple", "pear"]

        assert b.post("/regenerate").status_code == 200
        regenerated = _sid(b)
        assert regenerated != logged_in
        with pytest.raises(SessionNotFound):
            admin.get_session(logged_in, touch=False)
        assert b.get("/me").json() == {"user": ann, "cart": ["apple", "pear"]}

        # A stale cookie (the session ended) never revives its id: a write gets a fresh one.
        _set(b, anonymous)
        assert b.get("/me").json() == {"user": None, "cart": []}
        assert b.post("/cart/fig").json() == {"cart": ["fig"]}
        assert _sid(b) != anonymous
        with pytest.raises(SessionNotFound):
            admin.get_session(anonymous, touch=False)

        _set(b, regenerated)
        assert b.post("/logout").status_code == 200
        assert not b.cookies.get(COOKIE)  # expired by starsessions
        with pytest.raises(SessionNotFound):
            admin.get_session(regenerated, touch=False)
        assert admin.user_sessions(ann)["sessions"] == []
        _set(b, regenerated)  # a copy of the old cookie gets nothing
        assert b.get("/me").json() == {"user": None, "cart": []}


def test_a_garbage_cookie_is_no_session(site, admin: Client) -> None:
    url, _, _ = site
    with browser(url) as b:
        _set(b, "../../v1/boards")
        assert b.get("/me").json() == {"user": None, "cart": []}
        assert b.post("/cart/kiwi").json() == {"cart": ["kiwi"]}
        assert admin.get_session(_sid(b), touch=False)["data"]["cart"] == ["kiwi"]


def test_logout_everywhere(site, admin: Client) -> None:
    url, _, _ = site
    bob = user()
    with browser(url) as phone, browser(url) as laptop, browser(url) as other:
        for b in (phone, laptop):
            b.post("/login", params={"user": bob})
        other.post("/login", params={"user": user()})
        assert len(admin.user_sessions(bob)["sessions"]) == 2
        assert phone.post("/logout-everywhere").json() == {"revoked": 2}
        assert admin.user_sessions(bob)["sessions"] == []
        assert laptop.get("/me").json() == {"user": None, "cart": []}
        assert other.get("/me").json()["user"] is not None  # someone else's stays


def test_sessions_expire(rankd: RankdServer, admin: Client) -> None:
    ns = _app(rankd, Gates())
    ns["store"].ttl = 1  # idle timeout 1 s
    cy = user()
    with Served(ns["app"]) as url, browser(url) as b:
        b.post("/login", params={"user": cy})
        sid = _sid(b)
        assert admin.get_session(sid, touch=False)["ttl"] == 1
        time.sleep(1.3)
        assert b.get("/me").json() == {"user": None, "cart": []}
        with pytest.raises(SessionNotFound):
            admin.get_session(sid, touch=False)
        assert admin.user_sessions(cy)["sessions"] == []


@pytest.mark.parametrize("ending", ["/logout", "/logout-everywhere"])
def test_a_save_racing_a_logout_does_not_resurrect_the_session(
    site, admin: Client, ending: str
) -> None:
    url, gates, _ = site
    dee = user()
    with browser(url) as tab1, browser(url) as tab2:
        tab1.post("/login", params={"user": dee})
        sid = _sid(tab1)
        _set(tab2, sid)
        answers: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: answers.append(tab1.post("/slow-cart/gold")))
        slow.start()
        try:
            assert gates.entered.wait(10), "the slow request never started"
            assert tab2.post(ending).status_code == 200  # the logout completes first
        finally:
            gates.release.set()
            slow.join(20)
        assert answers and answers[0].status_code == 200  # the app saw its write succeed...
        # ...but the session stays ended: not under its id, not under a new one.
        with pytest.raises(SessionNotFound):
            admin.get_session(sid, touch=False)
        assert admin.user_sessions(dee)["sessions"] == []
        assert tab1.get("/me").json() == {"user": None, "cart": []}
