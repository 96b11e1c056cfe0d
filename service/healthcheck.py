"""``rankd healthcheck``: the container HEALTHCHECK, asking the running rankd on *its* port.

A HEALTHCHECK that reads ``RANKD_PORT`` breaks as soon as the port is set another way
(``docker run rankd --port 9000``). This one reads the server's own command line and
environment from /proc/<pid> (PID 1 in a container: the entrypoint is rankd itself), resolves
them with the same rules the server used (flags > RANKD_* > RANKD_*_FILE > defaults), and
asks ``GET /healthz`` there: exit 0 when it answers 200, 1 otherwise (Docker's convention).
A wildcard bind (0.0.0.0, ::) is asked on loopback. Proxies from the environment are ignored:
an HTTP_PROXY set for the application must not reroute a check of localhost.
"""

import argparse
import sys
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from service.settings import Settings

SettingsFrom = Callable[[Sequence[str], Mapping[str, str]], Settings]

TIMEOUT = 2.0
# Where to ask a server bound to a wildcard address (nothing here binds anything).
_WILDCARDS = {
    "0.0.0.0": "127.0.0.1",  # noqa: S104
    "::": "::1",
    "[::]": "::1",
    "": "127.0.0.1",
}


def server_argv(cmdline: list[str]) -> list[str]:
    """The rankd arguments in a process's argv (``python /usr/local/bin/rankd --port 1 ...``,
    ``rankd --port 1``, ``python -m service --port 1``)."""
    for i, arg in enumerate(cmdline):
        if Path(arg).name == "rankd":
            return cmdline[i + 1 :]
        if arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] == "service":
            return cmdline[i + 2 :]
    raise ValueError(f"not a rankd command line: {cmdline[:3]!r}")


def _read_proc(pid: int) -> tuple[list[str], dict[str, str]]:
    proc = Path("/proc") / str(pid)
    cmdline = [a.decode() for a in proc.joinpath("cmdline").read_bytes().split(b"\0") if a]
    env: dict[str, str] = {}
    for item in proc.joinpath("environ").read_bytes().split(b"\0"):
        name, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            env[name] = value
    return cmdline, env


def main(argv: Sequence[str], settings_from: SettingsFrom) -> int:
    """``settings_from`` is the CLI's own parser, so both read settings the same way."""
    parser = argparse.ArgumentParser(
        prog="rankd healthcheck",
        description="exit 0 if the rankd running as --pid answers GET /healthz with 200",
    )
    parser.add_argument("--pid", type=int, default=1, help="the server's pid (default: 1)")
    pid = parser.parse_args(argv).pid
    try:
        cmdline, env = _read_proc(pid)
        settings = settings_from(server_argv(cmdline), env)
    except (OSError, ValueError, SystemExit) as exc:
        print(f"rankd healthcheck: cannot read the settings of pid {pid}: {exc}", file=sys.stderr)
        return 1
    host = _WILDCARDS.get(settings.host, settings.host).strip("[]")
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{settings.port}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT) as r:
            ok = r.status == 200
    except OSError as exc:
        print(f"rankd healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1
