"""Validation of the values clients hand the store: scores, member ids, board names, metadata.

Every check raises InvalidArgument (or LimitExceeded) quoting the bad value, so the service maps
it to a 4xx without knowing why. These run on every write, so the common case is a few C-level
calls: ``type(x) is int``, ``str.isascii``, one ``orjson.dumps`` for metadata.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from store.errors import BatchTooLarge, InvalidArgument, LimitExceeded
from store.show import show

Score = int | float

# A score whose magnitude reaches 2**63 is refused: JSON parsers disagree on such integers, and
# a float that large has lost every unit digit, so "best" and "sum" would compare garbage.
SCORE_LIMIT = 2**63

_BOARD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# C0, DEL and C1 (U+0080-U+009F): invisible in logs and terminals, and C1 includes NEL, which
# some tools treat as a line break -- an id holding one can forge a log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Ids that are addressed as one path segment: a client resolves "." and ".." away before the
# request is sent, and a "/" (even as %2F, which the server decodes) splits the segment.
_DOT_SEGMENTS = frozenset({".", ".."})

# Nesting of metadata and session data. orjson parses 1,024 levels but serialises only 254, and
# answers wrap the value in a few levels of their own: a deeper value would be stored and then
# fail every read, every WebSocket frame and the snapshot. 32 is far more than any real use.
MAX_JSON_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound the store puts on its input, boards and sessions alike: one value per process
    (service/settings.py ``ServiceLimits.store()``), shared by the keyspace and the session
    store of either backend. Counts of 0 mean no cap (recovery is never refused)."""

    # boards (store/boards.py, store/keyspace.py)
    member_bytes: int = 128
    metadata_bytes: int = 1024
    batch_items: int = 1000  # items in one batch of writes: ``check_batch_size``
    page_items: int = 1000  # entries in one page (top, a score range, the list of boards)
    radius: int = 100  # entries either side of a member in one around-me read
    boards: int = 0  # boards a keyspace may hold
    # sessions (store/sessions.py)
    session_data_bytes: int = 16384  # session data, as compact JSON
    session_user_bytes: int = 256
    sessions_per_user: int = 1000
    sessions_over_limit: str = "evict-oldest"  # or "refuse"
    anonymous_sessions: int = 0  # sessions without a user
    session_ended_ids: int = 1_000_000  # ended ids remembered (store/ended.py)
    session_ttl: int = 1800  # default idle timeout, seconds
    session_max_ttl: int = 30 * 86400
    session_lifetime: int = 7 * 86400  # default absolute lifetime, seconds
    session_max_lifetime: int = 365 * 86400


def check_batch_size(count: int, limits: Limits) -> None:
    """The one batch cap, for every backend: BatchTooLarge past ``limits.batch_items``."""
    if count > limits.batch_items:
        raise BatchTooLarge(f"a batch holds at most {limits.batch_items} items, but got {count}")


def check_score(score: object) -> Score:
    """Return the score to store, or raise InvalidArgument; -0.0 becomes 0.0."""
    if type(score) is int:
        if -SCORE_LIMIT < score < SCORE_LIMIT:
            return score
    elif type(score) is float:
        if not math.isfinite(score):
            raise InvalidArgument(f"score must be a finite number, but got {show(score)}")
        if -SCORE_LIMIT < score < SCORE_LIMIT:
            return score + 0.0
    else:
        raise InvalidArgument(f"score must be a number, but got {show(score)}")
    raise InvalidArgument(f"score must have magnitude below 2**63, but got {show(score)}")


def check_member(member: object, limits: Limits) -> str:
    if type(member) is not str:
        raise InvalidArgument(f"member must be a string, but got {show(member)}")
    if member.isascii():
        if (
            0 < len(member) <= limits.member_bytes
            and member.isprintable()
            and "/" not in member
            and member not in _DOT_SEGMENTS
        ):
            return member
    elif (
        0 < len(member.encode()) <= limits.member_bytes
        and not _CONTROL.search(member)
        and "/" not in member
    ):
        return member
    if not member:
        raise InvalidArgument("member must not be empty")
    if len(member) > limits.member_bytes or len(member.encode()) > limits.member_bytes:
        raise LimitExceeded(
            f"member must be at most {limits.member_bytes} UTF-8 bytes, but got {show(member)}"
        )
    check_path_segment("member", member)
    raise AssertionError("unreachable: every refusal above raises")  # pragma: no cover


def check_path_segment(what: str, text: str) -> None:
    """Refuse a non-empty id that could not be addressed as one path segment or logged safely."""
    if _CONTROL.search(text):
        raise InvalidArgument(f"{what} must not contain control characters, but got {show(text)}")
    if "/" in text:
        raise InvalidArgument(f"{what} must not contain '/', but got {show(text)}")
    if text in _DOT_SEGMENTS:
        raise InvalidArgument(f"{what} must not be {text!r}: it cannot be addressed in a path")


def check_board_name(name: object) -> str:
    if type(name) is str and _BOARD_NAME.fullmatch(name) and name not in _DOT_SEGMENTS:
        return name
    raise InvalidArgument(
        "board name must be 1-64 characters of A-Z a-z 0-9 _ . - (and not '.' or '..'), "
        f"but got {show(name)}"
    )


def check_depth(what: str, value: object) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH, without recursion. O(size of value)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item if type(item) is list else ()
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth >= MAX_JSON_DEPTH:
                    raise InvalidArgument(
                        f"{what} must be nested at most {MAX_JSON_DEPTH} levels deep"
                    )
                stack.append((child, depth + 1))


def check_metadata(metadata: object, limits: Limits) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if type(metadata) is not dict:
        raise InvalidArgument(f"metadata must be a JSON object, but got {show(metadata)}")
    try:
        size = len(orjson.dumps(metadata))
    except TypeError as exc:  # includes orjson's own "Recursion limit reached" past 254 levels
        raise InvalidArgument(f"metadata must be JSON-serialisable: {exc}") from None
    if size > limits.metadata_bytes:
        raise LimitExceeded(
            f"metadata must be at most {limits.metadata_bytes} bytes as JSON, but got {size}"
        )
    check_depth("metadata", metadata)  # after the size cap: the walk is bounded by it
    return metadata
