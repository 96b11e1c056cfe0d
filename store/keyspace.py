"""The keyspace: every board of one rankd process, and the one place mutations are announced.

Observers (the journal, the WebSocket hub) register in ``observers`` and are called
synchronously, in mutation order, with event tuples that carry resulting state
(store/events.py has the full list):

    ("bcfg",  board, options (every option, JSON form), previous BoardConfig | None, now)
                                                      board created (None) or reconfigured
    ("bdrop", board, Board)                           board dropped with all its entries
    ("bset",  board, member, score, seq, metadata, rank, previous_rank, old_key, old_metadata,
              window, period)
    ("bdel",  board, member, seq, previous_rank, old_key, old_metadata, window, period)
    ("bbatch", board, [bset | bdel, ...])             one record (store/boards.py)
    ("broll", board, window, closed period, current period)   a period ended (not journalled)

The trailing fields are the state each event replaced: ``undo(event)`` puts it back when the
event's journal record was lost (service/backend/journal_flusher.py), newest event first.

``seq`` is the board's write counter after the change (it also orders ties on ties=first boards),
so replaying events restores it exactly and new writes keep ranking behind older equal scores.

Observers must not raise for ordinary events and must not mutate the keyspace from inside the
callback; an observer that needs to refuse writes (persistence unhealthy) does it up front via
``writable`` before the store is touched, never half-way through.
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from store.boards import Board, BoardConfig, Entry, Event
from store.clock import Clock, SystemClock
from store.errors import BoardNotFound, Conflict, InsufficientStorage
from store.show import show
from store.values import Limits, check_board_name


class Keyspace:
    def __init__(self, limits: Limits | None = None, clock: Clock | None = None) -> None:
        self.limits = limits or Limits()
        self.clock: Clock = clock or SystemClock()
        self._boards: dict[str, Board] = {}
        # Boards with a window other than "all": the ones ``tick`` must roll over.
        self._timed: dict[str, Board] = {}
        self.observers: list[Callable[[Event], None]] = []

    def __len__(self) -> int:
        return len(self._boards)

    def find(self, name: str) -> Board | None:
        """The named board, or None. Runtime complexity: O(1)."""
        return self._boards.get(name)

    def names(self) -> list[str]:
        return list(self._boards)

    def clear(self) -> None:
        """Forget every board, emitting nothing (recovery starting over)."""
        self._boards.clear()
        self._timed.clear()

    def tick(self, now: float | None = None) -> None:
        """Roll every board whose current period of some window has ended, so observers hear
        of it (a ``broll`` event) even when nobody writes or reads the board.
        Runtime complexity: O(boards with timed windows), O(1) each when no period ended."""
        if now is None:
            now = self.clock.now()
        for board in list(self._timed.values()):
            board.roll(now)

    def _track(self, board: Board) -> None:
        if board._single is None:
            self._timed[board.name] = board
        else:
            self._timed.pop(board.name, None)

    def __iter__(self) -> Iterator[Board]:
        return iter(self._boards.values())

    def _emit(self, event: Event) -> None:
        for observer in self.observers:
            observer(event)

    def _new_board(self, name: str, config: BoardConfig) -> Board:
        board = Board(name, config, self.limits, self.clock.now)
        board.emit = self._emit
        self._boards[name] = board
        self._track(board)
        return board

    def _bcfg(self, board: Board, previous: BoardConfig | None, now: float) -> Event:
        return ("bcfg", board.name, board.config.as_dict(), previous, now)

    def get(self, name: str) -> Board:
        board = self._boards.get(name)
        if board is None:
            raise BoardNotFound(f"board {show(name)} does not exist")
        return board

    def configure(self, name: str, options: dict[str, Any]) -> tuple[Board, bool]:
        """Create a board or change its options; returns (board, created).

        ``order`` and ``ties`` decide the sort key, so they can change only while the board is
        empty (a silent re-sort would reshuffle every tie); ``update`` may change at any time.
        """
        check_board_name(name)
        board = self._boards.get(name)
        if board is None:
            config = BoardConfig.from_options(options)
            cap = self.limits.boards
            if cap and len(self._boards) >= cap:
                raise InsufficientStorage(
                    f"there are already {len(self._boards)} boards, the limit (--max-boards); "
                    "drop one or raise the limit"
                )
            board = self._new_board(name, config)
            self._emit(self._bcfg(board, None, self.clock.now()))
            return board, True
        config = BoardConfig.from_options(options, base=board.config)
        if config == board.config:
            return board, False
        fixed = config.fixed_changes(board.config)
        if fixed and len(board):
            raise Conflict(
                f"board {show(name)} holds {len(board)} entries; {', '.join(fixed)} can change "
                "only while it is empty (in every period)"
            )
        previous = board.config
        now = self.clock.now()
        board.set_config(config, now)
        self._track(board)
        self._emit(self._bcfg(board, previous, now))
        return board, False

    def board_for_write(self, name: str) -> Board:
        """The named board, created with default options if absent (as a score POST expects)."""
        board = self._boards.get(name)
        if board is None:
            board, _ = self.configure(name, {})
        return board

    def write(
        self, name: str, member: object, score: object, metadata: object = None, at: object = None
    ) -> Entry:
        """Write one score; an absent board is created with defaults, but only for a valid write
        (a refused write must not leave an empty board behind)."""
        board = self._boards.get(name)
        if board is None:
            check_board_name(name)
            Board(name, BoardConfig(), self.limits, self.clock.now).check_batch(
                [(member, score, metadata, at)]
            )
            board, _ = self.configure(name, {})
        return board.write(member, score, metadata, at)

    def write_many(self, name: str, items: Sequence[tuple[object, ...]]) -> list[Entry]:
        """Write a batch in order, all or nothing; creates an absent board as ``write`` does."""
        board = self._boards.get(name)
        if board is None:
            check_board_name(name)
            Board(name, BoardConfig(), self.limits, self.clock.now).check_batch(items)
            board, _ = self.configure(name, {})
        return board.write_many(items)

    def drop(self, name: str) -> None:
        board = self._boards.pop(name, None)
        if board is None:
            raise BoardNotFound(f"board {show(name)} does not exist")
        self._timed.pop(name, None)
        self._emit(("bdrop", name, board))

    def undo(self, event: Event) -> None:
        """Revert one event whose journal record was lost. Events must come newest first, so
        each finds the keyspace exactly as it left it. Observers see the resulting state."""
        name = event[1]
        if event[0] == "broll":
            return  # derived from the clock, not a change to undo
        if event[0] == "bcfg":
            previous = event[3]
            board = self._boards[name]
            if previous is None:
                # Created by this event: every later write to it was undone before this.
                assert not len(board), name
                del self._boards[name]
                self._timed.pop(name, None)
                self._emit(("bdrop", name, board))
            else:
                undone = board.config
                board.set_config(previous)
                self._track(board)
                self._emit(("bcfg", name, previous.as_dict(), undone, self.clock.now()))
        elif event[0] == "bdrop":
            board = event[2]
            assert name not in self._boards, name
            self._boards[name] = board
            self._track(board)
            board.seq += 1  # subscribers saw it vanish: the restored state is news to them
            self._emit(("bcfg", name, board.config.as_dict(), None, self.clock.now()))
        else:
            self._boards[name].undo(event)

    # -- persistence: replay and restore emit nothing ----------------------------------------

    def restore_board(self, name: str, config: BoardConfig, now: float | None = None) -> Board:
        """Create or reconfigure a board during recovery, keeping its entries; ``now`` is the
        instant the change was made (closed periods are trimmed to ``keep`` as they were)."""
        board = self._boards.get(name)
        if board is None:
            return self._new_board(name, config)
        fixed = config.fixed_changes(board.config)
        if fixed and len(board):
            # configure() never lets this happen, so a journal that says so is not ours.
            raise ValueError(f"board {name!r}: {fixed} change on a non-empty board")
        board.set_config(config, now)
        self._track(board)
        return board

    def apply(self, event: Event) -> None:
        """Apply a journalled event (idempotent); the inverse of what observers receive."""
        if event[0] == "bset":
            _, name, member, score, seq, meta = event[:6]
            self.replay_set(name, member, score, seq, meta, event[10], event[11])
        elif event[0] == "bbatch":
            for write in event[2]:
                self.apply(write)
        elif event[0] == "bdel":
            self.replay_delete(event[1], event[2], event[3], event[7], event[8])
        elif event[0] == "bcfg":
            self.replay_config(event[1], BoardConfig.from_options(event[2]), event[4])
        elif event[0] == "bdrop":
            self.replay_drop(event[1])
        elif event[0] != "broll":
            raise ValueError(f"not a keyspace event: {event[0]!r}")

    # The one replay path: journal records (store/disk/journal.py) and events (``apply``) both
    # land here, so the two can never disagree on what a record means.

    def replay_set(
        self,
        name: str,
        member: str,
        score: Any,
        seq: int,
        metadata: Any,
        window: str = "all",
        period: str = "all",
    ) -> None:
        self._boards[name].apply_set(member, score, seq, metadata, window, period)

    def replay_delete(
        self, name: str, member: str, seq: int, window: str = "all", period: str = "all"
    ) -> None:
        board = self._boards.get(name)
        if board is not None:
            board.apply_delete(member, seq, window, period)

    def replay_config(self, name: str, config: BoardConfig, now: float | None = None) -> None:
        board = self._boards.get(name)
        if board is not None and len(board) and config.fixed_changes(board.config):
            # configure() changes order/ties/windows only on an empty board, so at this record
            # the board was empty: replaying history older than the state does not fail here.
            del self._boards[name]
            self._timed.pop(name, None)
        self.restore_board(name, config, now)

    def replay_drop(self, name: str) -> None:
        self._boards.pop(name, None)
        self._timed.pop(name, None)

    def _check(self) -> None:
        for name, board in self._boards.items():
            assert board.name == name
            board._check()
            assert (name in self._timed) == (board._single is None), name
