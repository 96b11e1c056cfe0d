"""The one write path, shared by HTTP routes and the WebSocket ``score`` op.

Every mutation goes through the same three steps, in this order:

    1. persistence.check_writable()   refuse (store.Unavailable -> 503) *before* touching the
                                      store, so an unhealthy disk never leaves a change in
                                      memory that the journal did not get
    2. the store call                 synchronous: validates, mutates, emits journal events
    3. await persistence.commit()     only with fsync=always: the answer waits until the
                                      journal is durable (group commit: one fsync per loop turn)

What a 503 means. Step 1 refuses before anything happens. Step 3 fails (fsync=always) when the
journal write or fsync of the write's batch fails; by then the change is in memory, so the
journal flusher undoes it -- it and every later change whose record was lost, newest first,
before any of their writers resumes (service/journal_flusher.py, "Undo"). Either way the 503'd
write is invisible to the next read, absent after a restart, and safe to retry (a ``sum``
board does not count it twice; a failed session rotate leaves the old id working). A batch is
one journal record, so it is applied, undone or replayed as a whole.

Reads never come here. Without persistence (tests of the HTTP layer alone) steps 1 and 3 vanish.
"""

from collections.abc import Callable
from typing import Any, TypeVar

from service.runtime import Runtime
from store.boards import Entry

T = TypeVar("T")


async def mutate(rt: Runtime, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one store mutation under the write path's rules and return its result."""
    p = rt.persistence
    if p is None:
        return fn(*args, **kwargs)
    p.check_writable()
    result = fn(*args, **kwargs)
    if p.needs_commit:
        await p.commit()
    return result


async def score(rt: Runtime, board: str, member: object, value: object, metadata: object) -> Entry:
    """POST a score (board created with defaults if absent); returns the write result."""
    # Spelled out rather than via mutate(): this is the hottest path of the service.
    p = rt.persistence
    if p is None:
        return rt.keyspace.write(board, member, value, metadata)
    p.check_writable()
    result = rt.keyspace.write(board, member, value, metadata)
    if p.needs_commit:
        await p.commit()
    return result


async def score_batch(
    rt: Runtime, board: str, items: list[tuple[object, object, object]]
) -> list[Entry]:
    """Apply (member, score, metadata) writes in order, all or nothing (validated first)."""
    # The keyspace validates the whole batch before it creates an absent board.
    return await mutate(rt, rt.keyspace.write_many, board, items)
