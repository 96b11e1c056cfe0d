"""Every route method of ``Client`` and ``AsyncClient`` against a real rankd: what goes out
(names percent-encoded, options, If-Match) comes back as the README's wire shapes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from rankd_client import AsyncClient, Client, PreconditionFailed, SessionNotFound

# Every character rankd allows in a member id that means something in a URL.
ODD = "ann #1?&=%20 ü+"


def test_boards_round_trip(client: Client, name: str) -> None:
    assert client.put_board(name, order="asc", update="latest", ties="member") == {
        "board": name,
        "order": "asc",
        "update": "latest",
        "ties": "member",
        "player_writes": False,
        "player_rate": 60,
        "public_read": False,
        "size": 0,
    }
    assert client.put_board(name, update="sum")["update"] == "sum"  # others kept
    assert client.get_board(name)["order"] == "asc"

    first = client.post_score(name, ODD, 10, metadata={"car": "red"})
    assert first == {"member": ODD, "score": 10, "rank": 1, "previous": None, "changed": True}
    again = client.post_score(name, ODD, 5)  # sum: 15
    assert again["previous"] == {"score": 10, "rank": 1} and again["score"] == 15
    batch = client.post_batch(name, [{"member": "bob", "score": 3}, {"member": "cy", "score": 20}])
    assert [r["member"] for r in batch] == ["bob", "cy"] and batch[0]["rank"] == 1  # asc

    top = client.top(name)
    assert top["board"] == name and top["total"] == 3
    assert [(e["rank"], e["member"], e["score"]) for e in top["entries"]] == [
        (1, "bob", 3),
        (2, ODD, 15),
        (3, "cy", 20),
    ]
    assert top["entries"][1]["metadata"] == {"car": "red"}
    assert [e["member"] for e in client.top(name, offset=1, limit=1)["entries"]] == [ODD]
    assert client.member(name, ODD) == {
        "rank": 2,
        "member": ODD,
        "score": 15,
        "metadata": {"car": "red"},
    }
    around = client.around(name, "cy", radius=1)
    assert [e["member"] for e in around["entries"]] == [ODD, "cy"]
    assert client.rank_for_score(name, 4.5) == {"board": name, "score": 4.5, "rank": 2}
    assert client.rank_for_score(name, -1)["rank"] == 1

    listed = client.list_boards(limit=1000)
    assert name in [b["board"] for b in listed["boards"]]
    assert listed["offset"] == 0 and listed["total"] >= 1

    assert client.delete_member(name, ODD) is None
    assert client.top(name)["total"] == 2
    assert client.drop_board(name) is None
    assert name not in [b["board"] for b in client.list_boards(limit=1000)["boards"]]


def test_sessions_round_trip(client: Client, name: str) -> None:
    s = client.create_session(user=name, data={"cart": []}, ttl=600, max_lifetime=3600)
    assert s["user"] == name and s["data"] == {"cart": []} and s["ttl"] == 600
    assert s["version"] == 1 and s["max_expires_at"] - s["created_at"] == pytest.approx(3600)
    sid = s["id"]

    peeked = client.get_session(sid, touch=False)
    assert peeked["expires_at"] == s["expires_at"]
    assert client.get_session(sid)["expires_at"] >= s["expires_at"]

    patched = client.patch_session(sid, {"cart": [42], "coupon": "x"}, if_match=1)
    assert patched["data"] == {"cart": [42], "coupon": "x"} and patched["version"] == 2
    patched = client.patch_session(sid, {"coupon": None})  # unconditional; None deletes
    assert patched["data"] == {"cart": [42]} and patched["version"] == 3
    with pytest.raises(PreconditionFailed):
        client.replace_session(sid, {}, if_match=2)
    replaced = client.replace_session(sid, {"fresh": True}, if_match=3)
    assert replaced["data"] == {"fresh": True} and replaced["version"] == 4

    assert client.touch_session(sid)["id"] == sid
    rotated = client.rotate_session(sid)
    assert rotated["id"] != sid and rotated["data"] == {"fresh": True}
    with pytest.raises(SessionNotFound):
        client.get_session(sid)  # rotation killed the old id
    sid = rotated["id"]

    other = client.create_session(user=name)["id"]
    third = client.create_session(user=name)["id"]
    listed = client.user_sessions(name)
    assert listed["user"] == name
    assert [x["id"] for x in listed["sessions"]] == [sid, other, third]  # oldest first
    assert client.delete_session(third) is None
    assert client.revoke_user_sessions(name, keep=sid) == {"user": name, "revoked": 1}
    assert [x["id"] for x in client.user_sessions(name)["sessions"]] == [sid]
    assert client.revoke_user_sessions(name) == {"user": name, "revoked": 1}
    assert client.user_sessions(name)["sessions"] == []
    with pytest.raises(ValueError, match="keep"):
        client.revoke_user_sessions(name, keep="")  # never "revoke all" by accident

    anonymous = client.create_session()
    assert anonymous["user"] is None and anonymous["data"] == {}
    client.delete_session(anonymous["id"])


def test_operations(client: Client) -> None:
    assert client.health() == {"status": "ok"}
    ready = client.ready()
    assert ready["status"] == "ready" and isinstance(ready["epoch"], str)
    snap = client.snapshot()
    assert set(snap) == {"bytes", "seconds", "boards", "entries", "sessions"}
    assert snap["bytes"] > 0


def test_async_client_round_trip(server: Any, name: str) -> None:
    """The async transport sends the same calls: one pass over every method."""

    async def main() -> None:
        async with AsyncClient(server.url, trust_env=False) as c:
            assert (await c.put_board(name, update="sum"))["update"] == "sum"
            assert (await c.get_board(name))["size"] == 0
            assert name in [b["board"] for b in (await c.list_boards(limit=1000))["boards"]]
            assert (await c.post_score(name, ODD, 2))["rank"] == 1
            assert [
                r["score"] for r in await c.post_batch(name, [{"member": ODD, "score": 3}])
            ] == [5]
            assert (await c.top(name, limit=1))["entries"][0]["score"] == 5
            assert (await c.member(name, ODD))["score"] == 5
            assert (await c.around(name, ODD, radius=0))["entries"][0]["member"] == ODD
            assert (await c.rank_for_score(name, 6))["rank"] == 1
            await c.delete_member(name, ODD)
            assert (await c.top(name))["total"] == 0
            await c.drop_board(name)

            s = await c.create_session(user=name, data={"a": 1})
            assert (await c.get_session(s["id"], touch=False))["data"] == {"a": 1}
            s = await c.patch_session(s["id"], {"b": 2}, if_match=s["version"])
            s = await c.replace_session(s["id"], {"c": 3}, if_match=s["version"])
            assert s["data"] == {"c": 3} and s["version"] == 3
            assert (await c.touch_session(s["id"]))["version"] == 3
            s = await c.rotate_session(s["id"])
            assert [x["id"] for x in (await c.user_sessions(name))["sessions"]] == [s["id"]]
            assert (await c.revoke_user_sessions(name, keep=s["id"]))["revoked"] == 0
            await c.delete_session(s["id"])
            assert (await c.revoke_user_sessions(name))["revoked"] == 0

            assert (await c.health())["status"] == "ok"
            assert (await c.ready())["status"] == "ready"
            assert (await c.snapshot())["bytes"] > 0

    asyncio.run(asyncio.wait_for(main(), 60))


def test_the_client_imports_nothing_of_the_server() -> None:
    """DESIGN: ``rankd_client`` never imports ``store`` or ``service``."""
    code = (
        "import sys, rankd_client, rankd_client.subscribe\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('store', 'service'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
