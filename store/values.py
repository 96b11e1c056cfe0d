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

from store.errors import InvalidArgument, LimitExceeded

Score = int | float

# A score whose magnitude reaches 2**63 is refused: JSON parsers disagree on such integers, and
# a float that large has lost every unit digit, so "best" and "sum" would compare garbage.
SCORE_LIMIT = 2**63

_BOARD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Limits:
    member_bytes: int = 128
    metadata_bytes: int = 1024
    batch_items: int = 1000
    page_items: int = 1000
    radius: int = 100


def check_score(score: object) -> Score:
    """Return the score to store, or raise InvalidArgument; -0.0 becomes 0.0."""
    if type(score) is int:
        if -SCORE_LIMIT < score < SCORE_LIMIT:
            return score
    elif type(score) is float:
        if not math.isfinite(score):
            raise InvalidArgument(f"score must be a finite number, but got {score!r}")
        if -SCORE_LIMIT < score < SCORE_LIMIT:
            return score + 0.0
    else:
        raise InvalidArgument(f"score must be a number, but got {score!r}")
    raise InvalidArgument(f"score must have magnitude below 2**63, but got {score!r}")


def check_member(member: object, limits: Limits) -> str:
    if type(member) is not str:
        raise InvalidArgument(f"member must be a string, but got {member!r}")
    if member.isascii():
        if 0 < len(member) <= limits.member_bytes and member.isprintable():
            return member
    elif 0 < len(member.encode()) <= limits.member_bytes and not _CONTROL.search(member):
        return member
    if not member:
        raise InvalidArgument("member must not be empty")
    if _CONTROL.search(member):
        raise InvalidArgument(f"member must not contain control characters, but got {member!r}")
    raise LimitExceeded(
        f"member must be at most {limits.member_bytes} UTF-8 bytes, but got {member[:40]!r}..."
    )


def check_board_name(name: object) -> str:
    if type(name) is str and _BOARD_NAME.fullmatch(name):
        return name
    raise InvalidArgument(
        f"board name must be 1-64 characters of A-Z a-z 0-9 _ . -, but got {name!r}"
    )


def check_metadata(metadata: object, limits: Limits) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if type(metadata) is not dict:
        raise InvalidArgument(f"metadata must be a JSON object, but got {metadata!r:.60}")
    try:
        size = len(orjson.dumps(metadata))
    except TypeError as exc:
        raise InvalidArgument(f"metadata must be JSON-serialisable: {exc}") from None
    if size > limits.metadata_bytes:
        raise LimitExceeded(
            f"metadata must be at most {limits.metadata_bytes} bytes as JSON, but got {size}"
        )
    return metadata
