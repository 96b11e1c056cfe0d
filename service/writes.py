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

Writes that add data call ``grow(rt)`` first: over the memory limit they are refused (507)
before anything is touched (service/memory.py). A MemoryError from the store call may have cut
a mutation half-way (a skip list relinked but its spans not updated), so the guard gets the
structure's ``_check`` to run once memory is back; the error propagates (503). The journal only
ever receives a mutation's record after the mutation completed, so disk stays consistent.
"""

from collections.abc import Callable
from typing import Any, TypeVar

from service.runtime import Runtime
from store.boards import Entry

T = TypeVar("T")


def grow(rt: Runtime) -> None:
    """Refuse (InsufficientStorage -> 507) a write that adds data while memory is over."""
    if rt.memory.over:
        rt.memory.check()


async def mutate(rt: Runtime, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one store mutation under the write path's rules and return its result."""
    owner = getattr(fn, "__self__", None)  # the Keyspace, SessionStore or Board
    return await _mutate(rt, getattr(owner, "_check", None), fn, *args, **kwargs)


async def _mutate(
    rt: Runtime, check: Callable[[], None] | None, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    p = rt.persistence
    if p is not None:
        p.check_writable()
    try:
        result = fn(*args, **kwargs)
    except MemoryError:
        if check is not None:
            rt.memory.verify_later(check)
        raise
    if p is None:
        return result
    if p.needs_commit:
        await p.commit()
    return result


async def score(rt: Runtime, board: str, member: object, value: object, metadata: object) -> Entry:
    """POST a score (board created with defaults if absent); returns the write result."""
    # Spelled out rather than via mutate(): this is the hottest path of the service.
    if rt.memory.over:
        rt.memory.check()
    p = rt.persistence
    if p is not None:
        p.check_writable()
    try:
        result = rt.keyspace.write(board, member, value, metadata)
    except MemoryError:
        rt.memory.verify_later(_board_check(rt, board))
        raise
    if p is None:
        return result
    if p.needs_commit:
        await p.commit()
    return result


async def score_batch(
    rt: Runtime, board: str, items: list[tuple[object, object, object]]
) -> list[Entry]:
    """Apply (member, score, metadata) writes in order, all or nothing (validated first)."""
    # The keyspace validates the whole batch before it creates an absent board.
    grow(rt)
    # The board's _check rather than the whole keyspace's: only that board was being changed.
    return await _mutate(rt, _board_check(rt, board), rt.keyspace.write_many, board, items)


def _board_check(rt: Runtime, name: str) -> Callable[[], None]:
    def check() -> None:
        board = rt.keyspace.boards.get(name)
        if board is not None:
            board._check()

    return check
