"""File descriptors: raise RLIMIT_NOFILE at start-up and keep some back from clients.

As Redis does at start-up (``adjustOpenFilesLimit``), the soft limit is raised to the hard
limit, and the connection cap is lowered to fit what we got. ``RESERVED`` descriptors are
never given to clients, because the process itself needs descriptors at moments it cannot
choose: a snapshot's fork needs a pipe, a journal rotation opens a segment, directory fsyncs
open the directory, /metrics reads /proc. With 1,100 idle sockets under a 1,024 limit and no
reserve, the next snapshot failed with EMFILE and every write answered 503.

A running rankd holds ~25 descriptors of its own (stdio, epoll, the listening socket, the
loop's self-pipe and signal fd, the data-directory lock, the open journal segment, the
journal thread); the rest of the reserve covers a snapshot in progress, connections being
refused (they hold a descriptor until the loop's next iteration) and headroom.
"""

import contextlib
import resource
from typing import NamedTuple

RESERVED = 128
MIN_CONNECTIONS = 16


class Budget(NamedTuple):
    soft: int  # RLIMIT_NOFILE after raising it
    hard: int
    max_connections: int  # HTTP + WebSocket connections allowed at once


def raise_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (best effort); (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        # Linux refuses RLIM_INFINITY for NOFILE (it is bounded by fs.nr_open).
        target = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    else:
        target = hard
    if target != soft:
        # On failure keep what we have: budget() fits the connection cap to it.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def budget(wanted_connections: int) -> Budget:
    """Raise the limit, then the connection cap that fits under it with ``RESERVED`` spare."""
    soft, hard = raise_limit()
    usable = wanted_connections if soft == resource.RLIM_INFINITY else soft - RESERVED
    return Budget(soft, hard, min(wanted_connections, usable))
