"""The real-``rankd`` fixtures (tests/servers.py) for every service test module."""

from tests.servers import (
    http,
    name,
    problem,
    rankd_argv,
    rankd_server,
    server,
    server_class,
    tmpfs,
)

__all__ = [
    "http",
    "name",
    "problem",
    "rankd_argv",
    "rankd_server",
    "server",
    "server_class",
    "tmpfs",
]
