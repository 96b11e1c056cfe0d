"""rankd as the session store of a Starlette or FastAPI app, through starsessions.

    from rankd_client import AsyncClient
    from rankd_client.starsessions import RankdStore
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware

    rankd = AsyncClient("http://127.0.0.1:8000", api_key=KEY)
    store = RankdStore(rankd, user_key="user_id")
    app.add_middleware(SessionAutoloadMiddleware)
    app.add_middleware(SessionMiddleware, store=store, lifetime=86400)

starsessions picks a session id (128 random bits) and calls ``read``, ``write`` and
``remove``; rankd keeps the data, expires it (``ttl`` idle, starsessions' ``lifetime`` as the
absolute limit) and indexes it by user, so ``revoke_user`` logs a user out everywhere.

**The user.** The app keeps the logged-in user in its session under ``user_key``; the store
binds the rankd session to that user. A rankd session's user never changes, so when the user
under ``user_key`` differs from the one the session was read with (a login, or a logout that
keeps the session), ``write`` moves the data to a new id (ending the old one) and returns it:
starsessions sends the new id as the cookie. Every login rotates the id with no call from the
app, which is what defeats session fixation. The user the session was read with travels in
starsessions' own ``__metadata__`` entry, never in the app's view of the session.

**No resurrection.** ``write`` of a session that was read replaces its data and never creates
it: when the session ended meanwhile (a logout, a logout everywhere, expiry, racing this
request), the write is dropped and the cookie keeps naming the dead id, so the next request
starts a fresh, empty session. A brand-new session is created with ``If-None-Match: *`` under
starsessions' id; if rankd answers 410 (that id ended before: a stale cookie) or 412 (it is
live but was not read as this session), the data goes under a fresh id instead.

Sessions must be serialized as JSON objects (starsessions' default ``JsonSerializer``): rankd
stores a session's data as a JSON object.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from starsessions import SessionStore
from starsessions.session import generate_session_id

from rankd_client.client import AsyncClient
from rankd_client.errors import Gone, PreconditionFailed, SessionNotFound
from rankd_client.types import Revoked

__all__ = ["RankdStore"]

# Inside starsessions' "__metadata__" entry, between read and write of one request: the user
# the rankd session has (absent: the session was not read from rankd, it is new) and the id it
# was read under (the app may regenerate the id in between).
_USER = "rankd_user"
_ID = "rankd_id"
_META = "__metadata__"
# rankd's grammar for caller-chosen ids (starsessions makes 32 hex digits).
_ID_GRAMMAR = re.compile(r"[A-Za-z0-9_-]{32,128}")


class RankdStore(SessionStore):
    def __init__(
        self,
        client: AsyncClient,
        *,
        user_key: str | None = None,
        ttl: int | None = None,
    ) -> None:
        """``client`` is the app's (it owns its lifetime); ``user_key`` the session key that
        holds the logged-in user's id (a string; None: sessions are never bound to a user);
        ``ttl`` the idle timeout in seconds (None: the server's ``--session-ttl``)."""
        self.client = client
        self.user_key = user_key
        self.ttl = ttl

    async def read(self, session_id: str, lifetime: int) -> bytes:
        if not _ID_GRAMMAR.fullmatch(session_id):
            return b""  # a cookie no store of ours issued: no session at all
        try:
            session = await self.client.get_session(session_id)
        except SessionNotFound:
            return b""
        data = session["data"]
        meta = data.get(_META)
        meta = {**(meta if isinstance(meta, dict) else {}), _USER: session["user"]}
        meta[_ID] = session_id  # in this request's memory only: write strips it
        data[_META] = meta
        return json.dumps(data).encode()

    async def write(self, session_id: str, data: bytes, lifetime: int, ttl: int) -> str:
        values = json.loads(data)
        if not isinstance(values, dict):
            raise TypeError(f"rankd stores a session as a JSON object, but got {values!r:.80}")
        meta = values.get(_META)
        if not isinstance(meta, dict):
            meta = {}
        seen, read_id = meta.pop(_USER, _NEW), meta.pop(_ID, None)
        user = self._user(values)
        if seen is _NEW:
            if not _ID_GRAMMAR.fullmatch(session_id):
                session_id = generate_session_id()
            return await self._create(session_id, user, values, lifetime, fresh_on_conflict=True)
        if seen != user:
            # A login (or a user change): the data goes under a new id; the old id ends.
            new_id = await self._create(generate_session_id(), user, values, lifetime)
            if isinstance(read_id, str):
                await self.remove(read_id)
            return new_id
        try:
            if read_id != session_id:
                # The app called regenerate_session_id: rankd's rotate moves the session to a
                # new id only if it is still live, so a session ended meanwhile stays ended.
                session_id = (await self.client.rotate_session(read_id))["id"]
            await self.client.replace_session(session_id, values)
        except (SessionNotFound, Gone):
            pass  # it ended while this request ran: the end wins, the write is dropped
        return session_id

    async def remove(self, session_id: str) -> None:
        with contextlib.suppress(SessionNotFound):
            await self.client.delete_session(session_id)

    async def revoke_user(self, user: str, *, keep: str | None = None) -> Revoked:
        """End every session of ``user`` (but ``keep``): log out everywhere (else)."""
        return await self.client.revoke_user_sessions(user, keep=keep)

    def _user(self, values: dict[str, Any]) -> str | None:
        if self.user_key is None:
            return None
        user = values.get(self.user_key)
        if user is None or isinstance(user, str):
            return user
        raise TypeError(f"session[{self.user_key!r}] must be a string user id, but got {user!r}")

    async def _create(
        self,
        session_id: str,
        user: str | None,
        values: dict[str, Any],
        lifetime: int,
        fresh_on_conflict: bool = False,
    ) -> str:
        try:
            await self.client.create_session_with_id(
                session_id, user=user, data=values, ttl=self.ttl, max_lifetime=lifetime or None
            )
        except (Gone, PreconditionFailed):
            if not fresh_on_conflict:
                raise
            # A stale cookie (410) or a live id this request did not read (412): the data
            # the app built goes under an id of its own.
            return await self._create(generate_session_id(), user, values, lifetime)
        return session_id


class _New:
    def __repr__(self) -> str:
        return "<new session>"


_NEW: Any = _New()
