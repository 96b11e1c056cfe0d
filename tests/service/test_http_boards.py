"""Leaderboard routes against the real process: every route's answers and its 4xx paths."""

import httpx
import pytest


def test_put_creates_then_reconfigures(http: httpx.Client, name: str) -> None:
    r = http.put(f"/v1/boards/{name}", json={"order": "asc", "ties": "member"})
    assert r.status_code == 201
    assert r.headers["location"] == f"/v1/boards/{name}"
    player = {"player_writes": False, "player_rate": 60, "public_read": False}
    assert r.json() == {
        "board": name,
        "order": "asc",
        "update": "best",
        "ties": "member",
        **player,
        "size": 0,
    }
    r = http.put(f"/v1/boards/{name}", json={"update": "sum"})
    assert r.status_code == 200
    assert r.json() == {
        "board": name,
        "order": "asc",
        "update": "sum",
        "ties": "member",
        **player,
        "size": 0,
    }
    # An empty body is "no options": created with defaults, or unchanged.
    assert http.put(f"/v1/boards/{name}").status_code == 200
    assert http.put(f"/v1/boards/{name}x").json()["order"] == "desc"


def test_put_refuses_bad_options(http: httpx.Client, name: str, problem) -> None:
    body = problem(http.put(f"/v1/boards/{name}", json={"colour": "red"}), 400)
    assert "colour" in body["detail"]
    problem(http.put(f"/v1/boards/{name}", json={"order": "sideways"}), 400)
    problem(http.put(f"/v1/boards/{name}", json=["asc"]), 400)
    problem(http.put(f"/v1/boards/{name}", json={"order": 1}), 400)
    problem(http.put("/v1/boards/bad%20name", json={}), 400)
    problem(http.put("/v1/boards/" + "x" * 65, json={}), 400)
    assert http.get(f"/v1/boards/{name}").status_code == 404  # nothing was created


def test_order_change_on_full_board_conflicts(http: httpx.Client, name: str, problem) -> None:
    http.post(f"/v1/boards/{name}/scores", json={"member": "a", "score": 1})
    problem(http.put(f"/v1/boards/{name}", json={"order": "asc"}), 409, "conflict")
    assert http.put(f"/v1/boards/{name}", json={"update": "latest"}).status_code == 200


def test_get_list_and_delete(http: httpx.Client, name: str, problem) -> None:
    for suffix in ("b", "a", "c"):
        http.put(f"/v1/boards/{name}{suffix}")
    http.post(f"/v1/boards/{name}a/scores", json={"member": "m", "score": 3})
    assert http.get(f"/v1/boards/{name}a").json()["size"] == 1
    listed = http.get("/v1/boards", params={"limit": 1000}).json()
    mine = [b["board"] for b in listed["boards"] if b["board"].startswith(name)]
    assert mine == [f"{name}a", f"{name}b", f"{name}c"]
    assert listed["total"] >= 3
    page = http.get("/v1/boards", params={"offset": 1, "limit": 1}).json()
    assert page["offset"] == 1 and len(page["boards"]) == 1
    assert http.delete(f"/v1/boards/{name}a").status_code == 204
    problem(http.get(f"/v1/boards/{name}a"), 404, "board-not-found")
    problem(http.delete(f"/v1/boards/{name}a"), 404, "board-not-found")
    problem(http.get("/v1/boards", params={"limit": 0}), 400)
    problem(http.get("/v1/boards", params={"limit": 1001}), 400)


def test_score_write_result_and_reads(http: httpx.Client, name: str) -> None:
    b = f"/v1/boards/{name}"
    r = http.post(f"{b}/scores", json={"member": "alice", "score": 10, "metadata": {"lvl": 3}})
    assert r.status_code == 200
    assert r.json() == {
        "member": "alice",
        "score": 10,
        "rank": 1,
        "previous": None,
        "changed": True,
    }
    http.post(f"{b}/scores", json={"member": "bob", "score": 20})
    r = http.post(f"{b}/scores", json={"member": "alice", "score": 5})  # best: not an improvement
    assert r.json() == {
        "member": "alice",
        "score": 10,
        "rank": 2,
        "previous": {"score": 10, "rank": 2},
        "changed": False,
    }
    assert http.get(f"{b}/members/alice").json() == {
        "rank": 2,
        "member": "alice",
        "score": 10,
        "metadata": {"lvl": 3},
    }
    top = http.get(f"{b}/top").json()
    assert top == {
        "board": name,
        "total": 2,
        "entries": [
            {"rank": 1, "member": "bob", "score": 20},
            {"rank": 2, "member": "alice", "score": 10, "metadata": {"lvl": 3}},
        ],
    }
    assert http.get(f"{b}/top", params={"offset": 1, "limit": 1}).json()["entries"] == [
        {"rank": 2, "member": "alice", "score": 10, "metadata": {"lvl": 3}}
    ]
    assert http.get(f"{b}/top", params={"offset": 5}).json()["entries"] == []
    around = http.get(f"{b}/members/bob/around", params={"radius": 0}).json()
    assert [e["member"] for e in around["entries"]] == ["bob"]
    assert http.get(f"{b}/rank", params={"score": "15"}).json() == {
        "board": name,
        "score": 15,
        "rank": 2,
    }
    assert http.get(f"{b}/rank", params={"score": "-1.5e1"}).json()["score"] == -15.0
    assert http.delete(f"{b}/members/alice").status_code == 204
    assert http.get(f"{b}/top").json()["total"] == 1


def test_unknown_board_is_created_by_a_score_but_read_as_404(
    http: httpx.Client, name: str, problem
) -> None:
    b = f"/v1/boards/{name}"
    problem(http.get(f"{b}/top"), 404, "board-not-found")
    problem(http.get(f"{b}/members/x"), 404, "board-not-found")
    problem(http.get(f"{b}/members/x/around"), 404, "board-not-found")
    problem(http.get(f"{b}/rank", params={"score": 1}), 404, "board-not-found")
    problem(http.delete(f"{b}/members/x"), 404, "board-not-found")
    # A rejected write must not leave a new empty board behind.
    problem(http.post(f"{b}/scores", json={"member": "", "score": 1}), 400)
    problem(http.post(f"{b}/scores:batch", json=[{"member": "a", "score": "1"}]), 400)
    batch = [{"member": "a", "score": 1}, {"member": "b", "score": 2**63}]  # bad only at the end
    problem(http.post(f"{b}/scores:batch", json=batch), 400)
    problem(http.get(b), 404)
    assert http.post(f"{b}/scores", json={"member": "x", "score": 1}).status_code == 200
    assert http.get(b).json()["update"] == "best"
    problem(http.get(f"{b}/members/y"), 404, "member-not-found")
    problem(http.get(f"{b}/members/y/around"), 404, "member-not-found")
    problem(http.delete(f"{b}/members/y"), 404, "member-not-found")


def test_batch_applies_in_order_all_or_nothing(http: httpx.Client, name: str, problem) -> None:
    b = f"/v1/boards/{name}"
    http.put(b, json={"update": "sum"})
    r = http.post(
        f"{b}/scores:batch",
        json=[
            {"member": "a", "score": 1},
            {"member": "a", "score": 2},
            {"member": "b", "score": 2},
        ],
    )
    assert r.status_code == 200
    assert [(x["member"], x["score"], x["rank"]) for x in r.json()] == [
        ("a", 1, 1),
        ("a", 3, 1),
        ("b", 2, 2),
    ]
    assert http.post(f"{b}/scores:batch", json=[]).json() == []
    # The last item is bad: nothing of the batch may be applied.
    problem(
        http.post(f"{b}/scores:batch", json=[{"member": "a", "score": 5}, {"member": "c"}]), 400
    )
    problem(
        http.post(f"{b}/scores:batch", json=[{"member": "a", "score": 2**62}] * 3), 400
    )  # sum overflow found before anything is written
    assert http.get(f"{b}/members/a").json()["score"] == 3
    problem(http.post(f"{b}/scores:batch", json={"member": "a", "score": 1}), 400)
    problem(http.post(f"{b}/scores:batch", json=[[]]), 400)
    too_many = [{"member": f"m{i}", "score": i} for i in range(1001)]
    problem(http.post(f"{b}/scores:batch", json=too_many), 413, "batch-too-large")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "JSON body"),
        (b"{", "not valid JSON"),
        (b'{"member": "a", "score": NaN}', "not valid JSON"),
        (b'{"member": "a", "score": Infinity}', "not valid JSON"),
        (b'{"member": "a", "score": 1e999}', "not valid JSON"),
        (b'{"member": "a", "score": "1"}', "number"),
        (b'{"member": "a", "score": true}', "number"),
        (b'{"member": "a", "score": null}', "number"),
        (b'{"member": "a", "score": 9223372036854775808}', "2**63"),
        (b'{"member": "a", "score": -9223372036854775808}', "2**63"),
        (b'{"member": "a", "score": 1e300}', "2**63"),
        (b'{"member": "a"}', "score"),
        (b'{"score": 1}', "member"),
        (b'{"member": 7, "score": 1}', "string"),
        (b'{"member": "", "score": 1}', "empty"),
        (b'{"member": "a\\u0000b", "score": 1}', "control"),
        (b'{"member": "a", "score": 1, "extra": 1}', "extra"),
        (b'{"member": "a", "score": 1, "metadata": [1]}', "metadata"),
        (b'{"member": "a", "score": 1, "metadata": "x"}', "metadata"),
        (b'[{"member": "a", "score": 1}]', "object"),
        (b'"\\ud800"', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_bad_score_bodies_are_400(
    http: httpx.Client, name: str, problem, body: bytes, needle: str
) -> None:
    r = http.post(
        f"/v1/boards/{name}/scores", content=body, headers={"content-type": "application/json"}
    )
    detail = problem(r, 400)["detail"]
    assert needle in detail, detail


def test_size_limits(http: httpx.Client, name: str, problem) -> None:
    b = f"/v1/boards/{name}/scores"
    ok = http.post(b, json={"member": "é" * 64, "score": 1})  # 128 UTF-8 bytes: at the limit
    assert ok.status_code == 200
    problem(http.post(b, json={"member": "é" * 64 + "x", "score": 1}), 400, "limit-exceeded")
    problem(http.post(b, json={"member": "m", "score": 1, "metadata": {"k": "v" * 1100}}), 400)
    json = {"content-type": "application/json"}
    problem(http.post(b, content=b" " * (64 * 1024 + 1), headers=json), 413, "payload-too-large")

    # Chunked upload without Content-Length: the cap holds all the same.
    def chunks():
        for _ in range(100):
            yield b" " * 1024

    problem(http.post(b, content=chunks(), headers=json), 413, "payload-too-large")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("top", {"limit": "0"}),
        ("top", {"limit": "1001"}),
        ("top", {"limit": "ten"}),
        ("top", {"limit": "1e3"}),
        ("top", {"limit": "+5"}),
        ("top", {"limit": " 5"}),
        ("top", {"limit": ""}),
        ("top", {"offset": "-1"}),
        ("top", {"offset": "99999999999999999999"}),
        ("top", {"ofset": "1"}),
        ("top", [("limit", "1"), ("limit", "2")]),
        ("members/a/around", {"radius": "101"}),
        ("members/a/around", {"radius": "-1"}),
        ("rank", {}),
        ("rank", {"score": "NaN"}),
        ("rank", {"score": "Infinity"}),
        ("rank", {"score": "1e999"}),
        ("rank", {"score": "0x10"}),
        ("rank", {"score": "01"}),
        ("rank", {"score": "1."}),
        ("rank", {"score": "9223372036854775808"}),
        ("rank", {"score": ""}),
    ],
)
def test_bad_query_params_are_400(http: httpx.Client, name: str, problem, path, params) -> None:
    http.post(f"/v1/boards/{name}/scores", json={"member": "a", "score": 1})
    problem(http.get(f"/v1/boards/{name}/{path}", params=params), 400)


def test_member_path_validation(http: httpx.Client, name: str, problem) -> None:
    http.post(f"/v1/boards/{name}/scores", json={"member": "a", "score": 1})
    problem(http.get(f"/v1/boards/{name}/members/{'m' * 129}"), 400, "limit-exceeded")
    problem(http.get(f"/v1/boards/{name}/members/a%01b"), 400)
    problem(http.delete(f"/v1/boards/{name}/members/{'m' * 129}"), 400)
    # A member id with spaces and non-ASCII is addressable once percent-encoded.
    http.post(f"/v1/boards/{name}/scores", json={"member": "Zoë B", "score": 2})
    assert http.get(f"/v1/boards/{name}/members/Zo%C3%AB%20B").json()["rank"] == 1


def test_wrong_method_and_unknown_route(http: httpx.Client, problem) -> None:
    r = http.patch("/v1/boards/x")
    problem(r, 405, "method-not-allowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}
    problem(http.get("/v1/boards/x/scores"), 405)
    problem(http.get("/v1/nope"), 404, "not-found")
    problem(http.get("/v1/boards/x/members/a/b/c"), 404)
