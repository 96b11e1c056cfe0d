"""The WebSocket fan-out hub (hub.py tells how its parts fit)."""

from service.hub.delivery import SLICE
from service.hub.groups import MAX_RADIUS, MAX_TOP, AroundSub, RankSub, Subscription, TopSub
from service.hub.hub import Hub
from service.hub.wire import SEND_TIMEOUT, Peer, ws_frame, ws_payload

__all__ = [
    "MAX_RADIUS",
    "MAX_TOP",
    "SEND_TIMEOUT",
    "SLICE",
    "AroundSub",
    "Hub",
    "Peer",
    "RankSub",
    "Subscription",
    "TopSub",
    "ws_frame",
    "ws_payload",
]
