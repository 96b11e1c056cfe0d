"""The web apps of README "Use it from your app", taken from the README as written, and a
real uvicorn to serve them on a free port (in a thread: the app talks to rankd over the wire).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_URL = "http://127.0.0.1:8000"
HEADING = "## Use it from your app"


def blocks() -> list[str]:
    """The python blocks of the section, in order: client, FastAPI app, Django settings, game."""
    text = README.read_text()
    start = text.index(HEADING)
    end = text.index("\n## ", start + len(HEADING))
    found = re.findall(r"```python\n(.*?)```", text[start:end], re.S)
    assert len(found) == 4, "README 'Use it from your app' changed: update tests/client/apps.py"
    return found


def run_block(index: int, url: str, key: str, **names: Any) -> dict[str, Any]:
    """Execute block ``index`` against ``url`` with ``KEY`` = key; its namespace."""
    code = blocks()[index]
    assert DEFAULT_URL in code
    namespace: dict[str, Any] = {"KEY": key, "__name__": f"readme_block_{index}", **names}
    exec(compile(code.replace(DEFAULT_URL, url), str(README), "exec"), namespace)
    return namespace


class Served:
    """``with Served(app) as url:`` -- uvicorn on 127.0.0.1, a port the OS picks."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn took over 20 s to start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive(), "uvicorn did not stop"
