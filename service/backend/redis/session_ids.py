"""Session ids that name their cluster slot: ``id = T "." R`` (48 characters).

``T`` = base64url of the first 3 bytes of HMAC-SHA256(secret, user): 4 characters, 2^24
buckets. ``R`` = ``secrets.token_urlsafe(32)``: 43 characters, 256 random bits, the whole
secret part of the id. An anonymous session draws ``T`` at random. Every key of a bucket carries
``{T}`` as its hash tag (keys.py), so looking a session up needs only the id, and creating,
listing and revoking a user's sessions need only the user: each is one single-slot call. A
bucket holds the users whose HMAC shares 24 bits: ~6 users per bucket at 100M users.

Caller-chosen ids (``PUT /v1/sessions/{id}`` + ``If-None-Match: *``, 32-128 of
``[A-Za-z0-9_-]``: never a ``.``, so never mistaken for ``T.R``) cannot name their slot. Such a
session still lives in its user's bucket ``T`` (or, anonymous, in ``chosen_bucket(id)``), so the
user index, the per-user limit, eviction and revoke-all stay single-slot calls exactly as for
issued ids. What routes the id is a pointer ``P:c:{C}:<digest(id)> = T`` in the slot of
``C = chosen_bucket(id)`` (a hash of the id itself), written with ``SET NX`` before the session
and kept for lifetime + --session-max-ttl: one more round trip per request for a chosen id,
none for an issued one. The pointer is also what refuses the id again: while it exists the id
is live (412) or ended (410); a process dying between the pointer and the session leaves the id
refused (410), never half-created and never resurrected.

The secret lives in the cluster (``P:secret``, set once with NX) so every rankd instance maps a
user to the same bucket without extra configuration; rotating it is not supported (every user
would move bucket and lose sight of their sessions).
"""

import base64
import hashlib
import hmac
import re
import secrets

SESSION_ID_CHARS = 48
_SESSION_ID = re.compile(r"[A-Za-z0-9_\-]{4}\.[A-Za-z0-9_\-]{43}")


def user_bucket(secret: bytes, user: str) -> str:
    digest = hmac.new(secret, user.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:3]).decode()


def random_bucket() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()


def new_session_id(bucket: str) -> str:
    """A fresh id in ``bucket`` (rotation keeps the bucket, so the user index stays put)."""
    sid = f"{bucket}.{secrets.token_urlsafe(32)}"
    assert len(sid) == SESSION_ID_CHARS, sid
    return sid


def chosen_bucket(session_id: str) -> str:
    """The slot tag of a caller-chosen id's pointer: 24 bits of its SHA-256."""
    return base64.urlsafe_b64encode(hashlib.sha256(session_id.encode()).digest()[:3]).decode()


def session_bucket(session_id: str) -> str | None:
    """The bucket an id names, or None when it is not an id of this scheme."""
    if _SESSION_ID.fullmatch(session_id):
        return session_id[:4]
    return None
