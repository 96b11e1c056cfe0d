"""Fixtures that run the real ``rankd`` process, shared by tests/service and tests/contract.

A plain module (on the path through pytest's ``pythonpath``): each directory's conftest.py
imports the fixtures it wants, and tests/contract/conftest.py overrides the server fixtures
so that they run the backend under test.

``rankd_server(**flags)`` starts ``rankd`` (the installed console script) on a port the OS
picks (``--port 0``; the port is read back from the "rankd listening on ..." line, so parallel
runs never race for a port), with a fresh data directory, and waits until /readyz answers 200.
Flags are passed through: ``rankd_server(fsync="always", api_key=["k...:admin"])`` becomes
``--fsync always --api-key k...:admin``; ``True`` is a bare flag. Every server started by the
factory is killed at teardown if the test did not stop it.

    srv = rankd_server()
    srv.url, srv.port, srv.data_dir, srv.proc
    srv.client()                  httpx.Client on srv.url (proxies from the environment ignored)
    srv.stop(signal.SIGTERM)      -> exit status; SIGKILL simulates a crash
    srv.restart()                 same port and data dir, waits for /readyz again
    srv.logs()                    everything the process wrote to stderr

``server`` is one shared, open (no keys) process for tests that only need *a* server; they
use unique board and user names so they never see each other's data.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_LISTENING = re.compile(r"rankd listening on http://(\S+?):(\d+)/")


def rankd_command() -> list[str]:
    """The console script next to this interpreter (scripts/test installs the project)."""
    script = Path(sys.executable).with_name("rankd")
    if not script.exists():
        raise RuntimeError(f"{script} is missing: install the project (pip install -e .)")
    return [str(script)]


def flag_args(flags: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args


class RankdServer:
    def __init__(
        self,
        workdir: Path,
        flags: dict[str, Any],
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.workdir = workdir
        self.preexec_fn = preexec_fn
        self.data_dir = data_dir or workdir / "data"
        self.flags = dict(flags)
        self.env = dict(env or {})
        self.host = str(self.flags.pop("host", "127.0.0.1"))
        self.port = int(self.flags.pop("port", 0))
        self.proc: subprocess.Popen[bytes] | None = None
        self._run = 0
        self._stderr_paths: list[Path] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self) -> list[str]:
        # The redis backend keeps no local data and refuses --data-dir.
        disk = [] if self.flags.get("backend") == "redis" else ["--data-dir", str(self.data_dir)]
        return [
            *rankd_command(),
            "--host",
            self.host,
            "--port",
            str(self.port),
            *disk,
            *flag_args(self.flags),
        ]

    def start(self, wait_ready: bool = True) -> RankdServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._run += 1
        out = self.workdir / f"stdout.{self._run}.log"
        err = self.workdir / f"stderr.{self._run}.log"
        self._stderr_paths.append(err)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RANKD_")}
        env.update(self.env)
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=stdout,
                stderr=stderr,
                cwd=self.workdir,
                env=env,
                preexec_fn=self.preexec_fn,
            )
        self._wait_listening(out)
        if wait_ready:
            self.wait_ready()
        return self

    def _wait_listening(self, out: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            match = _LISTENING.search(out.read_text(errors="replace"))
            if match:
                self.port = int(match.group(2))
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"rankd exited with {self.proc.returncode} before listening:\n{self.logs()}"
                )
            time.sleep(0.02)
        raise RuntimeError(f"rankd did not start listening in {START_TIMEOUT}s:\n{self.logs()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with self.client(timeout=2.0) as c:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"rankd exited with {self.proc.returncode} while starting:\n{self.logs()}"
                    )
                try:
                    if c.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"rankd not ready after {timeout}s:\n{self.logs()}")

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 10.0)
        return httpx.Client(base_url=self.url, trust_env=False, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait; returns the exit status (negative: killed by that signal)."""
        proc = self.proc
        assert proc is not None, "not started"
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"rankd ignored signal {sig} for {timeout}s") from None
        return proc.returncode

    def restart(self, sig: int = signal.SIGTERM, **flags: Any) -> RankdServer:
        """Stop (by ``sig``) and start again on the same port and data dir; flags are merged."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop(sig)
        self.flags.update(flags)
        return self.start()

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self._stderr_paths if p.exists())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


ServerFactory = Callable[..., RankdServer]


@pytest.fixture
def rankd_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Factory: ``rankd_server(env=None, data_dir=None, start=True, preexec_fn=None, **flags)``.

    ``preexec_fn`` runs in the child before exec (e.g. to lower RLIMIT_NOFILE).
    """
    started: list[RankdServer] = []

    def factory(
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        start: bool = True,
        preexec_fn: Callable[[], None] | None = None,
        **flags: Any,
    ) -> RankdServer:
        workdir = tmp_path / f"rankd{len(started)}"
        workdir.mkdir()
        srv = RankdServer(workdir, flags, env=env, data_dir=data_dir, preexec_fn=preexec_fn)
        started.append(srv)
        return srv.start() if start else srv

    yield factory
    for srv in started:
        srv.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RankdServer]:
    srv = RankdServer(tmp_path_factory.mktemp("shared-rankd"), {})
    srv.start()
    yield srv
    status = srv.stop(signal.SIGTERM)
    assert status in (0, -signal.SIGTERM), f"shared rankd exited with {status}:\n{srv.logs()}"


@pytest.fixture
def http(server: RankdServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture
def name() -> str:
    """A board/user name no other test uses (the shared server holds everyone's data)."""
    return "t" + uuid.uuid4().hex[:12]


def _assert_problem(
    response: httpx.Response, status: int, kind: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` (and type ``urn:rankd:problem:kind``)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert set(body) >= {"type", "title", "status", "detail"}, body
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    if kind is not None:
        assert body["type"] == f"urn:rankd:problem:{kind}", body
    return body


@pytest.fixture(scope="session")
def problem() -> Callable[..., dict[str, Any]]:
    """``problem(response, status, kind=None)`` asserts a problem+json answer, returns its body."""
    return _assert_problem


@pytest.fixture(scope="session")
def rankd_argv() -> list[str]:
    """The command that runs rankd (for tests that drive the CLI directly)."""
    return rankd_command()


@pytest.fixture(scope="session")
def server_class() -> type[RankdServer]:
    """``RankdServer`` itself, for module-scoped servers built by hand."""
    return RankdServer


TMPFS_SIZE = 2 << 20  # bytes: a disk that a test can fill in well under a second


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 2 MiB tmpfs (mode 0700), for disk-full tests; unmounted at teardown.

    Mounting is part of the test (they run as root, as CI does), so a failure fails it: a
    disk-full test that skipped would hide the very fault it exists to reproduce.
    """
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (these tests need root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)
