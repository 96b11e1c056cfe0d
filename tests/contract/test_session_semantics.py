"""Session routes against the real process: lifecycle, If-Match, user index, bad input."""

import httpx
import pytest

JSON = {"content-type": "application/json"}


def _create(http: httpx.Client, **body: object) -> dict:
    r = http.post("/v1/sessions", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_create_read_and_peek(http: httpx.Client, name: str) -> None:
    r = http.post("/v1/sessions", json={"user": name, "data": {"cart": [1]}, "ttl": 60})
    assert r.status_code == 201
    s = r.json()
    assert r.headers["location"] == f"/v1/sessions/{s['id']}"
    assert r.headers["etag"] == '"1"'
    assert len(s["id"]) >= 43
    assert s["user"] == name and s["data"] == {"cart": [1]} and s["version"] == 1
    assert s["ttl"] == 60
    assert isinstance(s["created_at"], float)
    assert s["created_at"] < s["expires_at"] <= s["created_at"] + 60 + 1
    assert s["expires_at"] <= s["max_expires_at"]

    peek = http.get(f"/v1/sessions/{s['id']}", params={"touch": "false"}).json()
    assert peek["expires_at"] == s["expires_at"]
    got = http.get(f"/v1/sessions/{s['id']}")
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    assert got.json()["expires_at"] >= s["expires_at"]
    touched = http.post(f"/v1/sessions/{s['id']}/touch").json()
    assert touched["expires_at"] >= got.json()["expires_at"]


def test_empty_create_gets_defaults(http: httpx.Client) -> None:
    r = http.post("/v1/sessions")
    assert r.status_code == 201
    s = r.json()
    assert s["user"] is None and s["data"] == {} and s["ttl"] == 1800


def test_patch_merges_and_put_replaces_with_if_match(
    http: httpx.Client, name: str, problem
) -> None:
    s = _create(http, user=name, data={"a": 1, "b": 2})
    url = f"/v1/sessions/{s['id']}"
    r = http.patch(url, json={"data": {"b": None, "c": 3}}, headers={"if-match": '"1"'})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    assert r.json()["data"] == {"a": 1, "c": 3} and r.json()["version"] == 2
    # RFC 9110: a false If-Match is 412 Precondition Failed (rankd answered 409 before #13).
    problem(http.patch(url, json={"data": {"x": 1}}, headers={"if-match": "1"}), 412)
    body = problem(
        http.put(url, json={"data": {}}, headers={"if-match": '"7"'}), 412, "precondition-failed"
    )
    assert s["id"] not in body["detail"]
    r = http.put(url, json={"data": {"z": True}}, headers={"if-match": "2"})
    assert r.json()["data"] == {"z": True} and r.json()["version"] == 3
    r = http.put(url, json={"data": {"z": False}}, headers={"if-match": "*"})
    assert r.json()["version"] == 4
    r = http.patch(url, json={"data": {"q": 1}})  # no If-Match: unconditional
    assert r.json()["version"] == 5
    # Strong comparison: a weak tag never matches, even the current version (was a 400).
    problem(http.patch(url, json={"data": {}}, headers={"if-match": 'W/"5"'}), 412)
    problem(http.patch(url, json={"data": {}}, headers={"if-match": "five"}), 400)
    # A list matches when any strong tag does.
    r = http.patch(url, json={"data": {"l": 1}}, headers={"if-match": '"9", W/"5", "5"'})
    assert r.status_code == 200 and r.headers["etag"] == '"6"'
    assert http.get(url).json()["data"] == {"z": False, "q": 1, "l": 1}


def test_rotate_kills_the_old_id(http: httpx.Client, name: str, problem) -> None:
    s = _create(http, user=name, data={"k": "v"})
    r = http.post(f"/v1/sessions/{s['id']}/rotate")
    assert r.status_code == 200
    new = r.json()
    assert new["id"] != s["id"] and new["data"] == {"k": "v"}
    assert r.headers["location"] == f"/v1/sessions/{new['id']}"
    problem(http.get(f"/v1/sessions/{s['id']}"), 404, "session-not-found")
    assert http.get(f"/v1/sessions/{new['id']}").status_code == 200


def test_delete_and_not_found_never_echoes_the_id(http: httpx.Client, problem) -> None:
    s = _create(http)
    url = f"/v1/sessions/{s['id']}"
    assert http.delete(url).status_code == 204
    for r in (
        http.get(url),
        http.delete(url),
        http.post(url + "/touch"),
        http.post(url + "/rotate"),
        http.patch(url, json={"data": {}}),
        http.put(url, json={"data": {}}),
    ):
        body = problem(r, 404, "session-not-found")
        assert s["id"] not in r.text, body


def test_user_sessions_list_and_revoke(http: httpx.Client, name: str, problem) -> None:
    ids = [_create(http, user=name)["id"] for _ in range(3)]
    _create(http, user=name + "other")
    listed = http.get(f"/v1/users/{name}/sessions").json()
    assert listed["user"] == name
    assert [s["id"] for s in listed["sessions"]] == ids
    r = http.delete(f"/v1/users/{name}/sessions", params={"except": ids[1]})
    assert r.json() == {"user": name, "revoked": 2}
    assert [s["id"] for s in http.get(f"/v1/users/{name}/sessions").json()["sessions"]] == [ids[1]]
    assert http.delete(f"/v1/users/{name}/sessions").json()["revoked"] == 1
    assert http.get(f"/v1/users/{name}/sessions").json()["sessions"] == []
    assert http.get(f"/v1/users/{name}other/sessions").json()["sessions"] != []
    problem(http.get(f"/v1/users/{'u' * 300}/sessions"), 400)
    problem(http.delete(f"/v1/users/{name}/sessions", params={"keep": "x"}), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"ttl": 0},
        {"ttl": 1.5},
        {"ttl": "60"},
        {"ttl": 10**12},
        {"max_lifetime": -1},
        {"user": ""},
        {"user": 5},
        {"user": "u" * 300},
        {"data": [1]},
        {"data": "x"},
        {"data": {"big": "x" * 17000}},
        {"role": "admin"},
    ],
)
def test_bad_create_bodies_are_400(http: httpx.Client, problem, body: dict) -> None:
    problem(http.post("/v1/sessions", json=body), 400)


def test_bad_data_bodies_are_400(http: httpx.Client, problem) -> None:
    s = _create(http)
    url = f"/v1/sessions/{s['id']}"
    problem(http.patch(url, json={}), 400)
    problem(http.patch(url, json={"data": 1}), 400)
    problem(http.put(url, json={"data": {}, "ttl": 5}), 400)
    problem(http.put(url, content=b"{oops", headers=JSON), 400, "malformed-json")
    problem(http.get(url, params={"touch": "maybe"}), 400)
    problem(http.get(url, params={"peek": "1"}), 400)
