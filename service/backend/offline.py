"""``rankd check`` and ``rankd repair`` (store/disk/check.py), and what a failed start-up says.

    rankd check  [--data-dir DIR]   exit 0: every file verifies and rankd would start as is
                                    exit 1: damage (the first bad file and byte offset shown)
                                    exit 2: could not check (no such directory; a running
                                            rankd holds the LOCK: stop it or check a copy)
    rankd repair [--data-dir DIR]   exit 0: repaired (or nothing to repair); ``check`` passes
                                    exit 1: not repairable here (a newer rankd's files, out of
                                            memory, an I/O error): nothing was moved
                                    exit 2: as for check

``--data-dir`` defaults to RANKD_DATA_DIR, then ./data, as for the server.
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from store.disk import check as checker
from store.disk.datadir import DataDirLocked
from store.disk.frames import DataError, FutureVersion

COMMANDS = ("check", "repair")
EXIT_OK = 0
EXIT_BAD = 1
EXIT_CANNOT = 2


def main(argv: Sequence[str]) -> int:
    command, rest = argv[0], argv[1:]
    parser = argparse.ArgumentParser(
        prog=f"rankd {command}",
        description="verify every data file offline"
        if command == "check"
        else "keep the longest valid history, move damaged files aside (never deleting)",
    )
    parser.add_argument("--data-dir", default=os.environ.get("RANKD_DATA_DIR", "data"))
    directory = Path(parser.parse_args(rest).data_dir)
    # check prints its own findings (recovery's log lines would say "moved" for a dry run);
    # repair's log lines are what it did.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"rankd {command}: %(message)s"))
    log = logging.getLogger("rankd")
    log.handlers[:] = [handler]
    log.setLevel(logging.CRITICAL + 1 if command == "check" else logging.INFO)
    try:
        return _check(directory) if command == "check" else _repair(directory)
    except (DataDirLocked, FileNotFoundError) as exc:
        print(f"rankd {command}: {exc}", file=sys.stderr)
        if isinstance(exc, DataDirLocked):
            print(
                "a running rankd owns it and changes its files while they are read: stop it "
                "first, or run this on a copy of the directory",
                file=sys.stderr,
            )
        return EXIT_CANNOT
    except (MemoryError, OSError, FutureVersion) as exc:
        print(f"rankd {command}: {describe_failure(exc, directory)}", file=sys.stderr)
        return EXIT_BAD


def _check(directory: Path) -> int:
    report = checker.check(directory)
    print(f"rankd check: {directory}")
    width = max((len(f.path.name) for f in report.files), default=0)
    for f in report.files:
        state = "ok " if f.error is None else "BAD"
        what = f.detail if f.error is None else f"{f.error.reason} at byte offset {f.error.offset}"
        print(f"  {f.path.name:<{width}}  {state}  {what}")
    rec = report.startup
    if rec is not None:
        loaded = Path(rec.snapshot_file).name if rec.snapshot_file else "no snapshot"
        print(
            f"start-up would load {loaded} + {rec.journal_segments} segments "
            f"({rec.journal_records} records): {report.boards} boards, {report.entries} "
            f"entries, {report.sessions} sessions"
        )
        writers = {kind: n for kind, n in rec.journal_writers.items() if n}
        if writers:
            # Who wrote the journalled board changes (store/writers.py): key, player, open
            # (no keys configured) or unknown (records from before journal v4).
            counts = ", ".join(f"{kind} {n}" for kind, n in writers.items())
            print(f"  board writes in the journal by writer: {counts}")
        if rec.fell_back:
            print("  the newest snapshot is damaged: start-up would fall back to the previous one")
        if rec.truncated_bytes:
            print(f"  would truncate {rec.truncated_bytes} bytes of torn journal tail")
        for path in rec.moved_aside:
            print(f"  would move aside {Path(path).name}")
    else:
        print("start-up would refuse")
    bad = report.first_bad
    if report.ok:
        print("result: ok")
        return EXIT_OK
    if bad is not None:
        print(f"first bad: {bad.path} at byte offset {bad.offset}: {bad.reason}")
    print(
        f"result: BAD -- `rankd repair --data-dir {directory}` keeps the longest valid history "
        "and moves damaged files aside"
    )
    return EXIT_BAD


def _repair(directory: Path) -> int:
    out = checker.repair(directory)
    print(f"rankd repair: {directory}")
    for path in out.moved_aside:
        print(f"  moved aside {Path(path).name}")
    if out.truncated_bytes:
        print(f"  truncated {out.truncated_bytes} bytes of torn journal tail")
    if out.fell_back:
        print("  the newest snapshot was damaged: kept the previous one and its longer journal")
    print(
        f"kept {out.boards} boards, {out.entries} entries, {out.sessions} sessions; "
        f"written as both snapshot generations (base segment {out.base})"
    )
    return EXIT_OK


def expected_failure(exc: BaseException) -> bool:
    """A start-up failure ``describe_failure`` fully explains: its traceback would be noise."""
    return isinstance(exc, MemoryError | OSError | DataError | DataDirLocked)


def describe_failure(exc: BaseException, directory: Path) -> str:
    """What start-up (and these commands) say when loading ``directory`` failed."""
    d = str(directory)
    if isinstance(exc, MemoryError):
        return (
            f"out of memory while loading {d} ({exc or 'MemoryError'}). This is not damage: "
            "nothing was moved aside or changed. Give rankd more memory (the data needs about "
            "as much in memory as it takes on disk, and more while loading)."
        )
    if isinstance(exc, FutureVersion):
        return f"{exc}. Run the newer rankd that wrote it; nothing was changed."
    if isinstance(exc, DataError):
        return (
            f"{exc}.\nThe data directory holds damage that no fallback covers; nothing was "
            f"changed. Ways out:\n"
            f"  rankd check --data-dir {d}     every damaged file and its first bad offset\n"
            f"  rankd repair --data-dir {d}    keep the longest valid history, move the rest "
            "aside (never deletes)\n"
            "  rankd --on-bad-data move-aside  the same, at start-up"
        )
    if isinstance(exc, OSError):
        return (
            f"I/O error on {d}: {exc}. This is not damage in the files: nothing was moved "
            "aside or changed. Check the disk (dmesg) and start again."
        )
    return f"{type(exc).__name__}: {exc}"
