"""rankd as Django's session store: ``SESSION_ENGINE = "rankd_client.django"``.

    # settings.py
    SESSION_ENGINE = "rankd_client.django"
    RANKD_URL = "http://127.0.0.1:8000"
    RANKD_API_KEY = os.environ["RANKD_API_KEY"]  # a key with the `sessions` scope
    # optional: RANKD_SESSION_MAX_LIFETIME (s, absolute), RANKD_SESSION_USER_KEY

rankd keeps the data (a JSON object: Django's default JSON serializer), expires it after
``get_expiry_age()`` idle seconds (``SESSION_COOKIE_AGE`` unless ``set_expiry`` says
otherwise; every read refreshes it, as ``SESSION_SAVE_EVERY_REQUEST`` would) and indexes
it by the logged-in user, so ``logout_everywhere`` ends all of a user's sessions.

Session keys are Django's own (32 characters of ``[a-z0-9]``, ~165 random bits), created
with ``If-None-Match: *``: 412 (live) or 410 (ended before: rankd never lets an ended id live
again) is Django's ``CreateError``, and it picks another key.

**The user.** A rankd session's user is fixed at creation, so the store binds it there:
``cycle_key`` (what ``login`` calls) picks the new key at once but creates the session at the
end of the request, when ``_auth_user_id`` is in it -- one creation per login, bound to the
user. A save that finds a different user under ``RANKD_SESSION_USER_KEY`` (default
``_auth_user_id``) than the session was read with, or a new ``set_expiry``, moves it to a new
key as well (a rankd session's user and idle ttl are fixed when it is created).

**No resurrection.** A save of an existing session only replaces its data: if the session
ended meanwhile (logout, logout everywhere, expiry, racing this request) rankd answers 404,
which is Django's ``UpdateError`` -- the middleware answers that request 400
(``SessionInterrupted``) and nothing comes back to life.
"""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)
from django.utils.crypto import get_random_string

from rankd_client.client import Client
from rankd_client.errors import Gone, PreconditionFailed, SessionNotFound
from rankd_client.types import Revoked

__all__ = ["SessionStore", "client", "close_client", "logout_everywhere"]

# rankd's grammar for caller-chosen ids; anything else in a cookie is no session at all.
_KEY = re.compile(r"[A-Za-z0-9_-]{32,128}")


_clients: dict[tuple[str, str | None], Client] = {}
_lock = threading.Lock()


def client() -> Client:
    """The process's rankd client, from ``RANKD_URL`` and ``RANKD_API_KEY`` (thread-safe)."""
    key = (settings.RANKD_URL, getattr(settings, "RANKD_API_KEY", None))
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.get(key)
            if found is None:
                found = _clients[key] = Client(key[0], api_key=key[1])
    return found


def close_client() -> None:
    """Close the process's client (a later call to ``client()`` opens a new one)."""
    for cached in _clients.values():
        cached.close()
    _clients.clear()


def _user_key() -> str:
    key: str = getattr(settings, "RANKD_SESSION_USER_KEY", "_auth_user_id")
    return key


_EXPIRY = "_session_expiry"  # where SessionBase.set_expiry keeps its value


class _Unread:
    def __repr__(self) -> str:
        return "<not read>"


_UNREAD: Any = _Unread()


class SessionStore(SessionBase):
    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._rankd_user: Any = _UNREAD  # the user the rankd session has, once read/created
        self._rankd_expiry: Any = None  # its "_session_expiry" then (set_expiry's value)
        self._pending = False  # cycle_key chose a key; the session is created on save

    def _validate_session_key(self, key: str | None) -> bool:
        return key is not None and _KEY.fullmatch(key) is not None

    def _get_new_session_key(self) -> str:
        # No exists() round trip: a taken key is a 412 at creation, and create() picks again.
        return get_random_string(32, VALID_KEY_CHARS)

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    def load(self) -> dict[str, Any]:
        try:
            session = client().get_session(self.session_key or "")
        except SessionNotFound:
            self._session_key = None
            return {}
        self._rankd_user = session["user"]
        self._rankd_expiry = session["data"].get(_EXPIRY)
        return session["data"]

    def exists(self, session_key: str | None) -> bool:
        if not self._validate_session_key(session_key):
            return False
        try:
            client().get_session(session_key or "", touch=False)
        except SessionNotFound:
            return False
        return True

    def create(self) -> None:
        while True:
            if not self._pending or self.session_key is None:
                self._session_key = self._get_new_session_key()
            self._pending = False
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None or (self._pending and not must_create):
            return self.create()
        # Django's private accessors (not in its stubs), as its own backends use them.
        data = self._get_session(no_load=must_create)  # type: ignore[attr-defined]
        user = data.get(_user_key())
        if user is not None:
            user = str(user)
        if must_create:
            try:
                client().create_session_with_id(
                    self.session_key,
                    user=user,
                    data=data,
                    ttl=max(1, self.get_expiry_age()),
                    max_lifetime=getattr(settings, "RANKD_SESSION_MAX_LIFETIME", None),
                )
            except (PreconditionFailed, Gone):
                raise CreateError from None
            self._rankd_user = user
            self._rankd_expiry = data.get(_EXPIRY)
            return None
        moved = self._rankd_user != user or self._rankd_expiry != data.get(_EXPIRY)
        if self._rankd_user is not _UNREAD and moved:
            # A login without cycle_key, or set_expiry: a rankd session's user and ttl are
            # fixed at creation, so the data moves to a new key created with the new ones.
            old = self.session_key
            self.create()
            self.delete(old)
            return None
        try:
            client().replace_session(self.session_key, data)
        except (SessionNotFound, Gone):
            raise UpdateError from None  # it ended meanwhile: the end wins
        return None

    def delete(self, session_key: str | None = None) -> None:
        key = self.session_key if session_key is None else session_key
        if key is None:
            return
        with contextlib.suppress(SessionNotFound):
            client().delete_session(key)

    def cycle_key(self) -> None:
        data = self._session  # type: ignore[attr-defined]
        old = self.session_key
        self._session_key = self._get_new_session_key()
        self._session_cache = data
        self._rankd_user = _UNREAD
        self._pending = True
        self.modified = True
        if old:
            self.delete(old)

    async def acycle_key(self) -> None:
        await sync_to_async(self.cycle_key)()

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: rankd expires sessions itself."""


def logout_everywhere(user: str | int, *, keep: str | None = None) -> Revoked:
    """End every session of ``user`` (its pk; but ``keep``, a session key): log out everywhere."""
    return client().revoke_user_sessions(str(user), keep=keep)
