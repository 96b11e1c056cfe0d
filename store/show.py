"""``show(value)``: a bad value as an error message may quote it -- short, safe, no credential.

Error messages quote what the client sent (``... but got 'alice '``) so it can fix the request.
``repr`` is the wrong tool for that once the value is hostile:

- it recurses: ``[[[...]]]`` 1,000 deep overflows the stack (RecursionError -> a 500);
- it is unbounded: a 60 KiB string becomes a 60 KiB detail, in every log line that quotes it;
- it echoes credentials: a session id sent as a member or a board name would be copied into
  an error body, and a prefix cut at a fixed width leaves a fragment of it.

So ``show`` quotes only what is small and flat, and describes everything else::

    'alice'                     a string up to QUOTE_CHARS characters, no credential-like run
    a string of 5000 characters longer strings: never a prefix, which could be half an id
    a string that looks like a credential (not shown)
                                a run of CREDENTIAL_RUN URL-safe characters: the shape of a
                                session id or an API key (the same rule the log redactor uses)
    42, 1.5, True, None         numbers (digits capped), booleans, null as JSON spells them
    [1, 'a']                    an array or object whose items are all flat and few
    an array of 3 items         anything nested, or long: never walked, so never recursive
    an object with 2 fields

It never raises and never looks deeper than one level, whatever it is given.
"""

import re

QUOTE_CHARS = 64
CREDENTIAL_RUN = 32
MAX_ITEMS = 4
_MAX_DIGITS = 24

_CREDENTIAL = re.compile(rf"[A-Za-z0-9_\-]{{{CREDENTIAL_RUN},}}")


def show(value: object) -> str:
    """A short, safe rendering of ``value`` for an error message. O(1) in nesting depth."""
    try:
        flat = _flat(value)
        if flat is not None:
            return flat
        if type(value) is list or type(value) is tuple:
            if len(value) <= MAX_ITEMS:
                items = [_flat(v) for v in value]
                if all(i is not None for i in items):
                    return "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
            return f"an array of {len(value)} item{'s' if len(value) != 1 else ''}"
        if type(value) is dict:
            if len(value) <= MAX_ITEMS:
                pairs = [(_flat(k), _flat(v)) for k, v in value.items()]
                if all(k is not None and v is not None for k, v in pairs):
                    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
            return f"an object with {len(value)} field{'s' if len(value) != 1 else ''}"
        return f"a value of type {type(value).__name__}"
    except Exception:  # e.g. MemoryError; a message is never worth a failed request
        return "a value that cannot be shown"


def _flat(value: object) -> str | None:
    """A scalar rendered, or None for containers."""
    kind = type(value)
    if kind is str:
        return _string(value)  # type: ignore[arg-type]
    if value is None or kind is bool:
        return repr(value)
    if kind is int:
        if -(10**_MAX_DIGITS) < value < 10**_MAX_DIGITS:
            return repr(value)
        return "an integer too long to show"
    if kind is float:
        return repr(value)
    return None


def _string(text: str) -> str:
    if len(text) > QUOTE_CHARS:
        return f"a string of {len(text)} characters"
    if _CREDENTIAL.search(text):
        return "a string that looks like a credential (not shown)"
    return repr(text)
