"""Checks the CLI runs before it binds anything or recovers: is the data directory usable?

Recovery can take minutes on a big data set; a second rankd pointed at a directory that a live
one owns must say so at once, not after loading everything. The probe takes the directory's
LOCK (flock) and lets go of it immediately: recovery takes it again for good. A rankd that
starts in between still fails, later, with the same DataDirLocked message.
"""

import os
from pathlib import Path

from store.disk import datadir
from store.disk.datadir import DataDirLocked


def data_dir_problem(directory: Path) -> str | None:
    """None if ``directory`` can be owned by this process, else what to do about it."""
    if not directory.exists():
        parent = directory.resolve().parent
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK | os.X_OK):
            return (
                f"cannot create the data directory {str(directory)!r}: {str(parent)!r} is not "
                "writable by this user; create it (owned by this user) or pick another "
                "with --data-dir / RANKD_DATA_DIR"
            )
        return None
    if not directory.is_dir():
        return f"--data-dir {str(directory)!r} exists and is not a directory"
    try:
        fd = datadir.lock(directory)
    except DataDirLocked as exc:
        return (
            f"{exc}; stop that process first, or give this one its own --data-dir (RANKD_DATA_DIR)"
        )
    except OSError as exc:
        return (
            f"cannot use the data directory {str(directory)!r}: {exc.strerror}; it must be "
            "readable and writable by the user rankd runs as"
        )
    os.close(fd)
    return None
