"""Bearer-key authentication with scopes.

    scope      grants
    read       GET on boards
    write      board writes, PUT/DELETE of boards
    sessions   everything under /v1/sessions and /v1/users
    metrics    GET /metrics (for a Prometheus scraper: it can read nothing else)
    admin      /v1/admin/* and every other scope

Keys are compared in constant time against *every* configured key with no early exit, on
SHA-256 digests so the comparison never leaks a key's length either. When no keys are
configured the server runs in protected mode (loopback only, enforced by the CLI) and routes are
built without any auth wrapper at all, so an open local server pays nothing per request.

A key is never logged and never echoed: 401/403 bodies say what is wrong, not with what.

The other credentials -- a player's ``Authorization: Session <id>`` and no credential at all on
a ``public_read`` board -- are judged by service/players.py, which needs the backend.
"""

import hashlib
import hmac
from collections.abc import Mapping

from starlette.requests import Request

from service.errors import Problem

READ = "read"
WRITE = "write"
SESSIONS = "sessions"
METRICS = "metrics"
ADMIN = "admin"

_REALM = 'Bearer realm="rankd"'


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Auth:
    def __init__(self, keys: Mapping[str, frozenset[str]]) -> None:
        self._keys = [(_digest(key), scopes) for key, scopes in keys.items()]
        # What logs say about a key (keys have no names; never the key): its scopes.
        self._labels = {scopes: "key:" + ",".join(sorted(scopes)) for scopes in keys.values()}

    def label(self, scopes: frozenset[str]) -> str:
        """``key:<scopes>``, the access log's name for a key holder (service/access.py)."""
        return self._labels.get(scopes) or "key:" + ",".join(sorted(scopes))

    def scopes_for(self, header: str | None) -> frozenset[str] | None:
        """Scopes of the presented key, or None when absent, malformed or unknown."""
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        presented = _digest(token)
        found: frozenset[str] | None = None
        for digest, scopes in self._keys:
            # No break: the time taken must not depend on which key (if any) matched.
            if hmac.compare_digest(presented, digest) and found is None:
                found = scopes
        return found

    def check(self, request: Request, scope: str) -> None:
        """Raise a 401/403 Problem unless the request carries a key with ``scope`` (or admin)."""
        self.check_header(request.headers.get("authorization"), scope)

    def check_header(self, header: str | None, scope: str) -> frozenset[str]:
        """``check`` for an ``Authorization`` value already read (None: absent); the key's
        scopes when it passes."""
        scopes = self.scopes_for(header)
        if scopes is None:
            if header is None:
                raise Problem(
                    401,
                    "unauthorized",
                    "this route needs an API key: send 'Authorization: Bearer <key>'",
                    {"WWW-Authenticate": _REALM},
                )
            raise Problem(
                401,
                "unauthorized",
                "the API key is not valid",
                {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        if scope not in scopes and ADMIN not in scopes:
            raise Problem(
                403,
                "forbidden",
                f"the API key lacks the {scope!r} scope this route needs",
                {"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{scope}"'},
            )
        return scopes
