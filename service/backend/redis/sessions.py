"""Sessions over the ``rankd_s_*`` functions: one bucket (the user's slot) per call.

Validation is the embedded store's own (a ``SessionStore`` used only for its checks), so both
backends refuse the same inputs with the same messages; the cluster holds the data and the
clock (the shard's ``TIME``). Ids are ``T.R`` (session_ids.py): a session is found from its id
alone, a user's sessions from the user alone (``T`` = HMAC of the user under the cluster's
secret ``P:secret``).

Patch without If-Match is read, merge here, compare-and-set on the version, retried until no
concurrent write slips in between (nothing is lost). A write whose data equals the current data
is a use, not a change (no new version), as in store/sessions.py.

Caller-chosen ids (``create(sid=...)``) live in the user's bucket and are found through a
pointer keyed by the id's own hash (session_ids.py); an id is refused again (410) while the
``e`` marker its create wrote (rankd.lua "Sessions") or its pointer exists: at least
--session-max-ttl after it ended, however it ended. ``--sessions-per-user`` with
``--sessions-over-limit`` evict-oldest (the oldest live session of the user ends, ``evicted``) or
refuse (429) is decided inside ``rankd_s_create``, atomically with the create.

``--max-anonymous-sessions``: sessions without a user live in random buckets, so they are
counted in one ZSET of its own slot (``P:anon``, rankd.lua rankd_anon_admit): admitted before
the create, uncounted when deleted or rotated away, and verified lazily at the cap (an id past
its first idle deadline is checked in its bucket: ended -> removed, touched -> its deadline
moved). The count never exceeds the cap; it can exceed the live sessions by the ended ones not
verified yet, and fall short of them by one per rankd process killed between a rotate's or
delete's two calls. One hot key: 0 turns it off.
"""

import asyncio
from typing import Any, cast

import orjson
from redis.exceptions import ResponseError

from service.backend.redis import keys
from service.backend.redis.durability import WaitPolicy, fcall_acked
from service.backend.redis.functions import Client, fcall
from service.backend.redis.session_ids import (
    chosen_bucket,
    new_session_id,
    random_bucket,
    session_bucket,
    user_bucket,
)
from service.schemas import SessionInfo
from store.errors import (
    InsufficientStorage,
    InvalidArgument,
    LimitExceeded,
    SessionEnded,
    SessionExists,
    SessionNotFound,
    TooManySessions,
    VersionConflict,
)
from store.sessions import _CHOSEN_ID, SessionStore
from store.show import show

_CAS_RETRIES = 50
_ANON_CHECKS = 64  # ids verified per refused anonymous create, at most


def _not_found() -> SessionNotFound:
    return SessionNotFound("session not found")  # never echo the id: it is a credential


class RedisSessions:
    def __init__(self, client: Client, prefix: str, checks: SessionStore) -> None:
        self.client = client
        self.prefix = prefix
        self._checks = checks  # validation only: holds no session
        self.secret = b""  # set by RedisBackend.start (P:secret)
        # what create/update/rotate/delete/revoke wait for (--redis-wait-*)
        self.wait = WaitPolicy()
        self.max_anonymous = 0  # --max-anonymous-sessions (0 = no cap); set by RedisBackend
        # session ends this process caused, by reason (expiry is Redis's, silent: not counted)
        self.counters: dict[str, int] = dict.fromkeys(
            ("created", "deleted", "revoked", "rotated", "evicted"), 0
        )

    async def _fcall_write(self, function: str, key_list: list[str], args: list[Any]) -> Any:
        """A session-changing function call, then the waits of ``self.wait`` on the same
        connection (durability.py). Touches are not waited for: a lost touch only brings an
        idle deadline back."""
        if self.wait.active:
            return await fcall_acked(self.client, function, key_list, args, self.wait)
        return await fcall(self.client, function, key_list, args)

    # -- keys ----------------------------------------------------------------------------------

    async def locate(self, sid: object) -> str | None:
        """The bucket of a live-or-remembered id: from the id itself (``T.R``) or from a
        caller-chosen id's pointer; None when no session can have this id."""
        if type(sid) is not str:
            raise InvalidArgument(f"session id must be a string, but got {type(sid).__name__}")
        bucket = session_bucket(sid)
        if bucket is not None:
            return bucket
        if not _CHOSEN_ID.fullmatch(sid):
            return None
        found = await self.client.get(keys.chosen_pointer(self.prefix, sid))
        if found is None:
            return None
        return found.decode() if isinstance(found, bytes) else str(found)

    async def _bucket(self, sid: object) -> str:
        bucket = await self.locate(sid)
        if bucket is None:
            raise _not_found()  # not an id this backend knows: no such session
        return bucket

    async def _keys(self, sid: str) -> tuple[str, str, str, str]:
        bucket = await self._bucket(sid)
        return (
            self._session_key(bucket, sid),
            keys.session_index(self.prefix, bucket),
            keys.session_channel(self.prefix, bucket),
            bucket,
        )

    def _session_key(self, bucket: str, sid: str) -> str:
        return f"{self.prefix}:s:{{{bucket}}}:{sid}"

    @staticmethod
    def _info(sid: str, reply: list[Any]) -> SessionInfo:
        user, data, created, ttl, idle, max_at, version = reply
        idle_f, max_f = float(idle), float(max_at)
        return {
            "id": sid,
            "user": user.decode() if user else None,
            "data": orjson.loads(data),
            "created_at": float(created),
            "expires_at": min(idle_f, max_f),
            "ttl": int(ttl),
            "max_expires_at": max_f,
            "version": int(version),
        }

    # -- the protocol --------------------------------------------------------------------------

    async def create(
        self,
        *,
        user: object,
        data: object,
        ttl: object,
        max_lifetime: object,
        sid: str | None = None,
    ) -> SessionInfo:
        checks = self._checks
        if sid is not None and session_bucket(sid) is None:
            checks._check_chosen_id(sid)  # an issued T.R id is judged by what is known of it
        ttl_s, life, clean = checks.check_new(user, data, ttl, max_lifetime)
        bucket = random_bucket() if user is None else user_bucket(self.secret, cast(str, user))
        encoded = orjson.dumps(clean)
        if sid is None:
            while True:
                chosen = new_session_id(bucket)
                try:
                    return await self._create(chosen, bucket, user, encoded, ttl_s, life)
                except SessionExists:
                    continue  # 2^-256; a reused id would hijack a session
        issued = session_bucket(sid)
        if issued is not None:
            # Not a caller-chosen id (it has a "."): only ever refused, as live or as ended.
            await self._refuse(sid, issued)
            checks._check_chosen_id(sid)  # never used here: malformed as a chosen id (400)
        if user is None:
            bucket = chosen_bucket(sid)
        pointer = keys.chosen_pointer(self.prefix, sid)
        ms = (life + checks.max_ttl) * 1000
        taken = await self.client.set(pointer, bucket, nx=True, px=ms, get=True)
        if taken is not None:
            await self._refuse(sid, taken.decode() if isinstance(taken, bytes) else str(taken))
            raise SessionEnded("a session with this id ended recently")  # the pointer says used
        try:
            return await self._create(sid, bucket, user, encoded, ttl_s, life)
        except TooManySessions:
            await self.client.delete(pointer)  # refused before use: the id stays free
            raise

    async def _refuse(self, sid: str, bucket: str) -> None:
        """SessionExists if ``sid`` is live in ``bucket``, SessionEnded if it was used there."""
        known = await fcall(
            self.client,
            "rankd_s_known",
            [self._session_key(bucket, sid), keys.session_used(self.prefix, bucket, sid)],
            [],
            readonly=True,
        )
        if known == 2:
            raise SessionExists("a session with this id exists")
        if known == 1:
            raise SessionEnded("a session with this id ended recently")

    async def _create(
        self, sid: str, bucket: str, user: object, encoded: bytes, ttl_s: int, life: int
    ) -> SessionInfo:
        if user is None and self.max_anonymous:
            await self._admit_anonymous(sid, ttl_s)
            try:
                return await self._create_in_bucket(sid, bucket, user, encoded, ttl_s, life)
            except BaseException:
                await self._uncount_anonymous(sid)
                raise
        return await self._create_in_bucket(sid, bucket, user, encoded, ttl_s, life)

    async def _create_in_bucket(
        self, sid: str, bucket: str, user: object, encoded: bytes, ttl_s: int, life: int
    ) -> SessionInfo:
        checks = self._checks
        index = keys.session_index(self.prefix, bucket)
        victims: list[str] = []
        for _ in range(_CAS_RETRIES):
            try:
                reply = await self._fcall_write(
                    "rankd_s_create",
                    [
                        self._session_key(bucket, sid),
                        index,
                        keys.session_used(self.prefix, bucket, sid),
                        keys.session_channel(self.prefix, bucket),
                        *(self._session_key(bucket, v) for v in victims),
                    ],
                    [
                        sid,
                        cast(str, user or ""),
                        encoded,
                        ttl_s,
                        life,
                        checks.max_sessions_per_user,
                        checks.over_limit,
                        checks.max_ttl,
                        *victims,
                    ],
                )
            except ResponseError as exc:
                text = str(exc)
                if text.startswith("EXISTS"):
                    await self._refuse(sid, bucket)
                    raise SessionExists("a session with this id exists") from None
                if text.startswith("LIMIT"):
                    raise TooManySessions(
                        f"user {show(user)} already has {text.split()[1]} sessions, "
                        f"the limit is {checks.max_sessions_per_user}"
                    ) from None
                if text.startswith("FULL"):
                    # evict-oldest: the function may end only sessions it was given
                    victims = [
                        i.decode()
                        for i in await fcall(
                            self.client, "rankd_s_list", [index], [cast(str, user)]
                        )
                    ]
                    continue
                raise
            self.counters["created"] += 1
            if reply[7]:
                self.counters["evicted"] += 1
            return self._info(sid, reply[:7])
        raise LimitExceeded(f"user {show(user)} keeps gaining sessions; retry the create")

    async def get(self, sid: str, *, touch: bool) -> SessionInfo:
        s, x, _, _ = await self._keys(sid)
        reply = await fcall(self.client, "rankd_s_get", [s, x], [sid, "1" if touch else "0"])
        if reply is None:
            raise _not_found()
        return self._info(sid, reply)

    async def touch(self, sid: str) -> SessionInfo:
        return await self.get(sid, touch=True)

    async def _put(
        self, sid: str, merge: dict[str, Any] | None, data: dict[str, Any], if_version: int | None
    ) -> SessionInfo:
        if if_version is not None and type(if_version) is not int:
            raise InvalidArgument(f"if_version must be an int, but got {show(if_version)}")
        s, x, _, _ = await self._keys(sid)
        for _ in range(_CAS_RETRIES):
            current = await self.get(sid, touch=False)
            if if_version is not None and if_version != current["version"]:
                raise VersionConflict(
                    f"version mismatch: expected {if_version}, "
                    f"but the session is at {current['version']}"
                )
            if merge is not None:
                merged = dict(current["data"])
                for key, value in merge.items():
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
                new = self._checks._check_data(merged)
            else:
                new = data
            if new == current["data"]:  # no change, no new version: a retried write is a no-op
                return await self.get(sid, touch=True)
            try:
                reply = await self._fcall_write(
                    "rankd_s_put",
                    [s, x],
                    [sid, orjson.dumps(new), current["version"]],
                )
            except ResponseError as exc:
                if not str(exc).startswith("VERSION"):
                    raise
                if if_version is not None:
                    raise VersionConflict(
                        f"version mismatch: expected {if_version}, "
                        f"but the session is at {str(exc).split()[1]}"
                    ) from None
                continue  # a concurrent write got in between: read and merge again
            if reply is None:
                raise _not_found()
            return self._info(sid, reply)
        raise VersionConflict("the session kept changing under this write; retry")

    async def patch(self, sid: str, data: object, *, if_version: int | None) -> SessionInfo:
        self._checks._check_object(data)
        return await self._put(sid, cast(dict[str, Any], data), {}, if_version)

    async def replace(self, sid: str, data: object, *, if_version: int | None) -> SessionInfo:
        clean = self._checks._check_data(data)
        return await self._put(sid, None, clean, if_version)

    async def rotate(self, sid: str) -> SessionInfo:
        s, x, ev, bucket = await self._keys(sid)
        while True:
            new = new_session_id(bucket)
            try:
                reply = await self._fcall_write(
                    "rankd_s_rotate",
                    [
                        s,
                        self._session_key(bucket, new),
                        x,
                        ev,
                        keys.session_used(self.prefix, bucket, new),
                    ],
                    [sid, new, self._checks.max_ttl],
                )
            except ResponseError as exc:
                if str(exc).startswith("EXISTS"):
                    continue
                raise
            if reply is None:
                raise _not_found()
            self.counters["rotated"] += 1
            info = self._info(new, reply)
            if info["user"] is None and self.max_anonymous:
                await self._recount_rotated(sid, new, info["expires_at"])
            return info

    async def delete(self, sid: str) -> None:
        s, x, ev, _ = await self._keys(sid)
        ended = await self._fcall_write("rankd_s_delete", [s, x, ev], [sid])
        if not ended:
            raise _not_found()
        self.counters["deleted"] += 1
        if ended == 2:
            await self._uncount_anonymous(sid)

    async def _user_ids(self, user: str) -> tuple[str, list[str]]:
        self._checks._check_user(user)
        bucket = user_bucket(self.secret, user)
        ids = await fcall(
            self.client, "rankd_s_list", [keys.session_index(self.prefix, bucket)], [user]
        )
        return bucket, [i.decode() for i in ids]

    async def list_user(self, user: str) -> list[SessionInfo]:
        _, ids = await self._user_ids(user)
        out = []
        for sid in ids:
            try:
                out.append(await self.get(sid, touch=False))
            except SessionNotFound:
                continue  # expired or revoked since the listing
        out.sort(key=lambda s: s["created_at"])
        return out

    async def revoke_user(self, user: str, *, except_id: str | None) -> int:
        for _ in range(_CAS_RETRIES):
            bucket, ids = await self._user_ids(user)
            victims = [i for i in ids if i != except_id]
            try:
                n = await self._fcall_write(
                    "rankd_s_revoke",
                    [
                        keys.session_index(self.prefix, bucket),
                        keys.session_channel(self.prefix, bucket),
                        *(self._session_key(bucket, i) for i in victims),
                    ],
                    [user, except_id or "", *victims],
                )
            except ResponseError as exc:
                if str(exc).startswith("RETRY"):
                    continue  # the user gained a session since the listing
                raise
            self.counters["revoked"] += int(n)
            return int(n)
        raise LimitExceeded(f"user {show(user)} keeps gaining sessions; retry the revoke")

    # -- --max-anonymous-sessions -----------------------------------------------------------

    async def _admit_anonymous(self, sid: str, ttl: int) -> None:
        """Count ``sid`` among the sessions without a user, or InsufficientStorage (507) at the
        cap once the oldest candidates were verified (rankd.lua rankd_anon_admit)."""
        anon = keys.anonymous(self.prefix)
        count = self.max_anonymous
        for _ in range(2):
            reply = await fcall(
                self.client,
                "rankd_anon_admit",
                [anon],
                [sid, ttl, self.max_anonymous, _ANON_CHECKS],
            )
            if reply == 1:
                return
            count, candidates = int(reply[1]), [c.decode() for c in reply[2:]]
            if not candidates:
                break
            await self._verify_anonymous(candidates)
        raise InsufficientStorage(
            f"there are already {count} sessions without a user, the limit "
            "(--max-anonymous-sessions); create sessions with a user or raise the limit"
        )

    async def _verify_anonymous(self, ids: list[str]) -> None:
        async def deadline(sid: str) -> str:
            try:
                info = await self.get(sid, touch=False)
            except SessionNotFound:
                return ""  # ended: its place is free
            return f"{info['expires_at']:.6f}"

        found = await asyncio.gather(*(deadline(i) for i in ids))
        pairs = [arg for sid, at in zip(ids, found, strict=True) for arg in (sid, at)]
        await fcall(self.client, "rankd_anon_refresh", [keys.anonymous(self.prefix)], pairs)

    async def _uncount_anonymous(self, sid: str) -> None:
        await self.client.zrem(keys.anonymous(self.prefix), sid)

    async def _recount_rotated(self, old: str, new: str, expires_at: float) -> None:
        # add the new id before removing the old: a crash between leaves one too many counted
        # (verified away later), never one too few
        anon = keys.anonymous(self.prefix)
        await self.client.zadd(anon, {new: expires_at})
        await self.client.zrem(anon, old)


__all__ = ["RedisSessions"]
