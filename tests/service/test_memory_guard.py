"""service.memory in process: size parsing, the cgroup rule, and the guard's state machine."""

from pathlib import Path

import pytest

from service import memory
from service.memory import MemoryGuard, cgroup_limit, parse_size
from service.settings import SettingsError, load
from store.errors import InsufficientStorage


@pytest.mark.parametrize(
    "raw,value",
    [
        ("0", 0),
        ("1024", 1024),
        ("64k", 65536),
        ("512m", 512 << 20),
        ("2G", 2 << 30),
        ("1gib", 1 << 30),
    ],
)
def test_parse_size(raw: str, value: int) -> None:
    assert parse_size(raw) == value


@pytest.mark.parametrize("raw", ["", "-1", "1.5g", "12 parsecs", "m"])
def test_parse_size_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_size(raw)
    with pytest.raises(SettingsError, match="--max-memory"):
        load({}, {"max_memory": raw or "x"})


def test_cgroup_files(tmp_path: Path) -> None:
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert cgroup_limit((v2, v1)) is None  # no cgroup at all
    v1.write_text("9223372036854771712\n")  # v1's "no limit"
    assert cgroup_limit((v2, v1)) is None
    v1.write_text("536870912\n")
    assert cgroup_limit((v2, v1)) == 512 << 20
    v2.write_text("max\n")  # v2 wins when present
    assert cgroup_limit((v2, v1)) is None
    v2.write_text("268435456\n")
    assert cgroup_limit((v2, v1)) == 256 << 20


def test_default_is_half_the_smaller_of_cgroup_and_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "cgroup_limit", lambda: 1 << 30)
    monkeypatch.setattr(memory, "physical_memory", lambda: 8 << 30)
    assert memory.default_limit() == 512 << 20
    assert load({}).max_memory == 512 << 20
    assert load({"RANKD_MAX_MEMORY": "0"}).max_memory == 0
    assert load({}, {"max_memory": "2g"}).max_memory == 2 << 30
    monkeypatch.setattr(memory, "cgroup_limit", lambda: None)
    assert memory.default_limit() == 4 << 30


def test_guard_refuses_only_while_over() -> None:
    guard = MemoryGuard(limit=1)  # any process is over one byte
    guard.check()  # not sampled yet
    guard.sample()
    assert guard.over and guard.used > 1
    with pytest.raises(InsufficientStorage, match="memory limit reached"):
        guard.check()
    assert guard.refused == 1
    guard.limit = 1 << 50
    guard.sample()
    assert not guard.over


def test_memory_error_refuses_growth_until_the_reserve_is_back() -> None:
    guard = MemoryGuard(limit=0)
    guard.start_reserve()
    guard.on_memory_error()
    with pytest.raises(InsufficientStorage, match="allocation failed"):
        guard.check()
    guard.sample()  # the reserve can be re-taken: room again
    assert not guard.over and guard.memory_errors == 1


def test_a_cut_mutation_is_verified_and_a_failure_stops_the_process() -> None:
    guard = MemoryGuard(limit=0)
    corrupt: list[bool] = []
    guard.on_corrupt = lambda: corrupt.append(True)
    guard.verify_later(lambda: None)
    guard.sample()
    assert not guard.over and not corrupt

    def broken() -> None:
        raise AssertionError("spans disagree")

    guard.verify_later(broken)
    guard.sample()
    assert corrupt == [True] and guard.corrupt and guard.over
    with pytest.raises(InsufficientStorage, match="restart"):
        guard.check()
