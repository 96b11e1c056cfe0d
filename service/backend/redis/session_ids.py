"""Session ids that name their cluster slot: ``id = T "." R`` (48 characters).

``T`` = base64url of the first 3 bytes of HMAC-SHA256(secret, user): 4 characters, 2^24
buckets. ``R`` = ``secrets.token_urlsafe(32)``: 43 characters, 256 random bits, the whole
secret part of the id. An anonymous session draws ``T`` at random. Every key of a bucket carries
``{T}`` as its hash tag (keys.py), so looking a session up needs only the id, and creating,
listing and revoking a user's sessions need only the user: each is one single-slot call. A
bucket holds the users whose HMAC shares 24 bits: ~6 users per bucket at 100M users.

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


def session_bucket(session_id: str) -> str | None:
    """The bucket an id names, or None when it is not an id of this scheme."""
    if _SESSION_ID.fullmatch(session_id):
        return session_id[:4]
    return None
