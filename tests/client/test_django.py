"""rankd as Django's session engine (``SESSION_ENGINE = "rankd_client.django"``), end to end.

Django is configured with README's settings block as written (plus what any Django site has:
apps, middleware, a SQLite user table) and driven by Django's test client -- Django's whole
request cycle, SessionMiddleware and ``django.contrib.auth``'s login/logout included -- against
a real rankd with keys. rankd's own view of each session is checked beside the site's answers:
login (the key rotates, once, bound to the user), read and write, log out, log out everywhere,
expiry, and a logout racing a request that saves the session (that request gets Django's 400
SessionInterrupted and nothing comes back).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import django
import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connections
from django.test import Client as Browser
from rankd_client import Client, SessionNotFound
from rankd_client.django import close_client

from tests.client.apps import run_block
from tests.servers import RankdServer

ADMIN = "django-admin-key-0123456789"


@pytest.fixture(scope="module")
def rankd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankdServer]:
    srv = RankdServer(tmp_path_factory.mktemp("django-rankd"), {"api_key": [f"{ADMIN}:admin"]})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def site(rankd: RankdServer, tmp_path_factory: pytest.TempPathFactory) -> Any:
    readme = run_block(2, rankd.url, ADMIN)
    ours = {k: v for k, v in readme.items() if k.isupper() and k != "KEY"}
    assert ours["SESSION_ENGINE"] == "rankd_client.django"
    db = tmp_path_factory.mktemp("django-db") / "db.sqlite3"
    # Django is configured once per process; this is the only test module that uses it.
    settings.configure(
        **ours,
        DEBUG=False,
        SECRET_KEY="test-only-" + "x" * 40,
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
        ],
        ROOT_URLCONF="tests.client.django_site",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)}},
        USE_TZ=True,
    )
    django.setup()
    call_command("migrate", verbosity=0)
    from tests.client import django_site

    yield django_site
    connections.close_all()
    close_client()


@pytest.fixture
def admin(rankd: RankdServer) -> Iterator[Client]:
    with Client(rankd.url, api_key=ADMIN, trust_env=False) as c:
        yield c


def name() -> str:
    return "u" + uuid.uuid4().hex[:12]


def sid(b: Browser) -> str:
    return b.cookies[settings.SESSION_COOKIE_NAME].value


def rankd_user(b: Browser) -> str:
    """The rankd user a logged-in browser's session is bound to: Django's user pk."""
    from django.contrib.auth.models import User

    return str(User.objects.get(username=b.get("/me").json()["user"]).pk)


def test_login_rotates_read_write_logout(site: Any, admin: Client) -> None:
    b = Browser()
    assert b.get("/me").json() == {"user": None, "cart": []}
    assert settings.SESSION_COOKIE_NAME not in b.cookies  # nothing stored for an empty session
    assert b.post("/cart/apple").json()["cart"] == ["apple"]
    anonymous = sid(b)
    stored = admin.get_session(anonymous, touch=False)
    assert stored["user"] is None and stored["data"] == {"cart": ["apple"]}
    assert stored["ttl"] == settings.SESSION_COOKIE_AGE
    assert stored["max_expires_at"] - stored["created_at"] == settings.RANKD_SESSION_MAX_LIFETIME

    ann = name()
    assert b.post(f"/login?user={ann}").json() == {"user": ann, "cart": ["apple"]}
    logged_in = sid(b)
    assert logged_in != anonymous
    with pytest.raises(SessionNotFound):  # the pre-login key is dead: no session fixation
        admin.get_session(anonymous, touch=False)
    pk = rankd_user(b)
    sessions = admin.user_sessions(pk)["sessions"]
    assert [s["id"] for s in sessions] == [logged_in]  # one session per login, bound to the user
    assert sessions[0]["data"]["_auth_user_id"] == pk

    assert b.post("/cart/pear").json() == {"user": ann, "cart": ["apple", "pear"]}
    assert sid(b) == logged_in
    assert admin.get_session(logged_in, touch=False)["data"]["cart"] == ["apple", "pear"]

    assert b.post("/logout").json() == {"user": None, "cart": []}
    with pytest.raises(SessionNotFound):
        admin.get_session(logged_in, touch=False)
    assert admin.user_sessions(pk)["sessions"] == []
    copy = Browser()
    copy.cookies[settings.SESSION_COOKIE_NAME] = logged_in  # a copied cookie gets nothing
    assert copy.get("/me").json() == {"user": None, "cart": []}
    copy.post("/cart/fig")  # ...and writing under it never revives that key
    assert sid(copy) != logged_in
    with pytest.raises(SessionNotFound):
        admin.get_session(logged_in, touch=False)


def test_a_garbage_cookie_is_no_session(site: Any, admin: Client) -> None:
    b = Browser()
    b.cookies[settings.SESSION_COOKIE_NAME] = "../../v1/boards"
    assert b.get("/me").json() == {"user": None, "cart": []}
    b.post("/cart/kiwi")
    assert admin.get_session(sid(b), touch=False)["data"] == {"cart": ["kiwi"]}


def test_logout_everywhere(site: Any, admin: Client) -> None:
    bob = name()
    phone, laptop, other = Browser(), Browser(), Browser()
    for b in (phone, laptop):
        b.post(f"/login?user={bob}")
    other.post(f"/login?user={name()}")
    pk = rankd_user(phone)
    assert len(admin.user_sessions(pk)["sessions"]) == 2
    assert phone.post("/logout-everywhere").json() == {"revoked": 2}
    assert admin.user_sessions(pk)["sessions"] == []
    assert laptop.get("/me").json() == {"user": None, "cart": []}
    assert other.get("/me").json()["user"] is not None  # someone else's stays


def test_set_expiry_expires_the_session(site: Any, admin: Client) -> None:
    b = Browser()
    b.post(f"/login?user={name()}")
    b.post("/short")  # set_expiry(1)
    key = sid(b)
    assert admin.get_session(key, touch=False)["ttl"] == 1
    time.sleep(1.3)
    assert b.get("/me").json() == {"user": None, "cart": []}
    with pytest.raises(SessionNotFound):
        admin.get_session(key, touch=False)


@pytest.mark.parametrize("ending", ["/logout", "/logout-everywhere"])
def test_a_save_racing_a_logout_does_not_resurrect_the_session(
    site: Any, admin: Client, ending: str
) -> None:
    site.entered.clear()
    site.release.clear()
    tab1, tab2 = Browser(), Browser()
    tab1.post(f"/login?user={name()}")
    key = sid(tab1)
    pk = rankd_user(tab1)
    tab2.cookies[settings.SESSION_COOKIE_NAME] = key
    answers: list[Any] = []

    def slow() -> None:
        try:
            answers.append(tab1.post("/slow-cart/gold"))
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        assert site.entered.wait(10), "the slow request never started"
        assert tab2.post(ending).status_code == 200  # the logout completes first
    finally:
        site.release.set()
        thread.join(20)
    # Django's answer to a save of a session deleted meanwhile: 400 SessionInterrupted.
    assert answers and answers[0].status_code == 400
    with pytest.raises(SessionNotFound):
        admin.get_session(key, touch=False)
    assert admin.user_sessions(pk)["sessions"] == []
    assert tab1.get("/me").json() == {"user": None, "cart": []}
