"""``GET /``: the live leaderboard page, one self-contained HTML response.

The page lives in ``service/static/`` as three plain files (``index.html``, ``style.css``,
``app.js``) that can be read and edited without a build step. They are inlined into one
document when this module is imported: one round trip, no static mount, nothing fetched from
anywhere else (no CDN, no web fonts). Because everything is inline, the Content-Security-Policy
can name the exact script and style by hash and forbid every other source; ``connect-src
'self'`` lets the script open ``/v1/ws`` on the same origin and nowhere else.

The page itself is public: it holds no data. The data comes over the WebSocket (the top N
and, from the "find me" box, an around-me subscription) and two same-origin reads (the board
list for the picker, and whether a board that shows no entries exists at all), each checking
the ``?token=`` the page passes through from its own URL -- or nothing, where the server
lets anyone read. Scores are shown digit for digit: the script keeps each score's JSON source
text instead of a JavaScript number, which is exact only up to 2**53.
"""

import base64
import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse

STATIC = Path(__file__).parent / "static"


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _build() -> tuple[str, dict[str, str]]:
    html = (STATIC / "index.html").read_text("utf-8")
    style = (STATIC / "style.css").read_text("utf-8")
    script = (STATIC / "app.js").read_text("utf-8")
    style_tag = '<link rel="stylesheet" href="style.css">'
    script_tag = '<script src="app.js"></script>'
    # Fail at import, not with a half-styled page, if someone edits the tags away.
    assert style_tag in html and script_tag in html, "index.html lost its style/script tags"
    page = html.replace(style_tag, f"<style>{style}</style>").replace(
        script_tag, f"<script>{script}</script>"
    )
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_sha256(script)}",
            f"style-src {_sha256(style)}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    headers = {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # the URL may carry ?token=
        "Cache-Control": "no-cache",
    }
    return page, headers


PAGE, HEADERS = _build()


async def live_page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)
