"""Browser rules: what a web page the user happens to have open may make rankd do.

A page on any origin can send requests to rankd through the user's browser, and rankd on
loopback without keys (protected mode) would obey them. Three holes, three rules:

    hole                                        rule (checked before auth)            answer
    a no-cors fetch or an HTML form posts       a body must be application/json or    415
    text/plain "JSON" (no CORS preflight)       application/*+json; so must any
                                                declared Content-Type, body or not
    any page writes or opens /v1/ws             Origin, when sent, must be rankd's    403
                                                own (scheme://Host) or listed in
                                                --cors-origins (writes and /v1/ws)
    DNS rebinding: evil.example resolves to     protected mode: Host must be          403
    127.0.0.1, so the page *is* same-origin     localhost or a loopback IP literal

Requests without an ``Origin`` header are not browser-initiated writes (browsers send it on
every non-GET request and on every WebSocket handshake): curl, game backends and SDKs pass.
Reads (GET/HEAD) are not Origin-checked: without CORS headers a foreign page cannot read the
answer. CORS itself (preflights, ``Access-Control-Allow-Origin``) is Starlette's
``CORSMiddleware``, mounted only when ``--cors-origins`` lists something.

Every one of those types needs a CORS preflight, which only a listed origin passes, so JSON
can no longer arrive in a "simple" request. The live page (``GET /``) is same-origin and
passes the Origin rule with no setting at all.

Cost: one pass over the raw ASGI header list per checked request, before a ``Request`` or
``Headers`` object exists: 0.7 us per POST (loadtest/RESULTS.md). GET routes skip it when
keys are configured.
"""

import ipaddress

from starlette.types import Scope

from service.errors import Problem
from store.show import show

# The request headers a browser may set itself on a preflighted request (besides the
# CORS-safelisted ones), and the response headers a script on an allowed origin may read.
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "If-Match", "If-None-Match")
CORS_EXPOSE_HEADERS = ("ETag", "Location", "Retry-After", "WWW-Authenticate")
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

_WS_SCHEMES = {"ws": "http", "wss": "https"}
_DEFAULT_PORT = {"http": ":80", "https": ":443"}
_MAX_KNOWN_HOSTS = 256  # loopback Host values remembered, so most requests skip the parse


def is_json(content_type: bytes) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters ignored."""
    essence = content_type.partition(b";")[0].strip().lower()
    return essence == b"application/json" or (
        essence.startswith(b"application/") and essence.endswith(b"+json")
    )


def is_loopback_host(host: str) -> bool:
    """A Host header value (``name[:port]``) that names this machine and no DNS name.

    ``localhost`` is resolved by the OS, never by a DNS server an attacker controls; IP
    literals cannot be rebound at all. Anything else (``evil.example``, ``localhost.``, a
    public IP) is refused: that is the DNS-rebinding case.
    """
    if host.startswith("["):
        name, bracket, _ = host[1:].partition("]")
        if not bracket:
            return False
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def own_origin(scheme: str, host: str) -> str:
    """rankd's own origin as a browser serialises it: ``scheme://host[:port]``, lower case."""
    scheme = _WS_SCHEMES.get(scheme, scheme)
    host = host.lower()
    default = _DEFAULT_PORT.get(scheme)
    if default is not None and host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{host}"


class BrowserRules:
    def __init__(self, cors_origins: frozenset[str], protected: bool) -> None:
        self.cors_origins = cors_origins
        self.protected = protected
        self._loopback_hosts: set[bytes] = set()

    def check_read(self, scope: Scope) -> None:
        """GET/HEAD: only the Host rule, only in protected mode (the caller skips it otherwise)."""
        for name, value in scope["headers"]:
            if name == b"host":
                self._host(value)
                return
        self._host(None)

    def check_write(self, scope: Scope) -> None:
        """State-changing routes: Host (protected mode), Origin, then Content-Type."""
        origin = host = ctype = None
        body = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-type":
                ctype = value
            elif name == b"content-length":
                body = value.strip() != b"0"
            elif name == b"transfer-encoding":
                body = True
        if self.protected:
            self._host(host)
        if origin is not None:
            self._origin(scope, origin, host)
        if (body or ctype is not None) and (ctype is None or not is_json(ctype)):
            shown = "none" if ctype is None else repr(ctype.decode("latin-1")[:80])
            raise Problem(
                415,
                "unsupported-media-type",
                "a request body must be JSON sent as 'Content-Type: application/json', "
                f"but the Content-Type was {shown}",
            )

    def ws_refusal(self, scope: Scope) -> str | None:
        """Why a WebSocket handshake must be refused (Host, Origin), or None to accept it."""
        origin = host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        try:
            if self.protected:
                self._host(host)
            if origin is not None:
                self._origin(scope, origin, host)
        except Problem as refusal:
            return refusal.detail
        return None

    def _host(self, host: bytes | None) -> None:
        if host in self._loopback_hosts:
            return
        text = "" if host is None else host.decode("latin-1")
        if host is None or not is_loopback_host(text):
            raise Problem(
                403,
                "host-not-allowed",
                "without API keys rankd answers only requests addressed to localhost or a "
                f"loopback IP (DNS rebinding protection), but the Host was {show(text)}",
            )
        if len(self._loopback_hosts) < _MAX_KNOWN_HOSTS:
            self._loopback_hosts.add(host)

    def _origin(self, scope: Scope, origin: bytes, host: bytes | None) -> None:
        text = origin.decode("latin-1")
        if text in self.cors_origins:
            return
        if host is not None and text == own_origin(scope["scheme"], host.decode("latin-1")):
            return
        raise Problem(
            403,
            "origin-not-allowed",
            f"pages on the web origin {show(text)} may not write here or open /v1/ws; "
            "list it in --cors-origins to allow it",
        )
