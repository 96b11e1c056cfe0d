"""rankd-client: talk to a rankd server (leaderboards, sessions, live ranks) from Python.

    from rankd_client import Client
    with Client("http://127.0.0.1:8000", api_key=KEY) as rankd:
        rankd.post_score("global", "ann", 42)
        rankd.top("global", limit=10)["entries"]

``Client`` blocks, ``AsyncClient`` is for asyncio and adds ``subscribe``; both take the same
arguments and have the same route methods (built once, in ``calls``). Errors are ``errors``.
"""

from rankd_client.calls import Call
from rankd_client.client import AsyncClient, Client
from rankd_client.errors import (
    BadRequest,
    BoardNotFound,
    ClientError,
    Conflict,
    Forbidden,
    Gone,
    InsufficientStorage,
    MemberNotFound,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ProblemError,
    RankdError,
    ServerError,
    SessionEnded,
    SessionNotFound,
    SubscriptionClosed,
    TooManyRequests,
    TransportError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from rankd_client.retry import NO_RETRY, Retry
from rankd_client.subscribe import Subscription, Update

__version__ = "0.1.0"

__all__ = [
    "NO_RETRY",
    "AsyncClient",
    "BadRequest",
    "BoardNotFound",
    "Call",
    "Client",
    "ClientError",
    "Conflict",
    "Forbidden",
    "Gone",
    "InsufficientStorage",
    "MemberNotFound",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ProblemError",
    "RankdError",
    "Retry",
    "ServerError",
    "SessionEnded",
    "SessionNotFound",
    "Subscription",
    "SubscriptionClosed",
    "TooManyRequests",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "Update",
]
