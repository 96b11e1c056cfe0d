"""deploy/: the alert rules pass promtool (syntax and their own unit tests), the Grafana
dashboard meets its schema, and every expression in either names a metric a real rankd exports.
"""

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.servers import RankdServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "rankd-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rankd-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "rankd-dashboard.json"
_METRIC = re.compile(r"\b((?:rankd|process)_[a-z_]+)\b")

# The subset of Grafana's dashboard model (schemaVersion 39) that an import relies on.
_TARGET = {
    "type": "object",
    "required": ["refId", "expr"],
    "properties": {"refId": {"type": "string"}, "expr": {"type": "string", "minLength": 1}},
}
_GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {
        "h": {"type": "integer", "minimum": 1},
        "w": {"type": "integer", "minimum": 1, "maximum": 24},
        "x": {"type": "integer", "minimum": 0, "maximum": 23},
        "y": {"type": "integer", "minimum": 0},
    },
}
SCHEMA = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer"},
                    "type": {"enum": ["row", "timeseries", "stat", "gauge", "table"]},
                    "gridPos": _GRID,
                    "targets": {"type": "array", "items": _TARGET},
                },
            },
        },
    },
}


@pytest.mark.needs_promtool
def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    unit = subprocess.run(
        ["promtool", "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_the_rules_cover_what_on_call_needs() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {
        "RankdPersistenceUnhealthy",
        "RankdSnapshotStale",
        "RankdEventLoopLag",
        "RankdMemoryNearLimit",
        "RankdHTTP5xxRate",
        "RankdWebSocketSlowConsumers",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert rule["annotations"]["summary"], rule


def test_dashboard_meets_the_schema_and_lays_out_cleanly() -> None:
    dash = json.loads(DASHBOARD.read_text())
    jsonschema.validate(dash, SCHEMA)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{p['title']!r} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["targets"], p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= variables


def _expressions() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = [
        (f"panel {p['title']!r}", t["expr"]) for p in dash["panels"] for t in p.get("targets", [])
    ]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append((f"variable {v['name']}", v["query"]))
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        out.append((f"alert {rule['alert']}", rule["expr"]))
    return out


def _exported(srv, tmp_path: Path, cluster: str) -> set[str]:
    """Sample names a real rankd exports once it has done some of everything."""
    with connect(srv.url.replace("http", "ws") + "/v1/ws") as ws:
        ws.send(json.dumps({"op": "subscribe", "id": "s", "board": "d", "top": 3}))
        ws.recv(timeout=10)
        with srv.client() as c:
            c.post("/v1/boards/d/scores", json={"member": "a", "score": 1})
            c.post("/v1/sessions", json={"user": "u"})
            assert c.post("/v1/admin/snapshot").status_code == 200
        ws.recv(timeout=10)
    time.sleep(0.3)  # a lag sample
    with srv.client() as c:
        text = c.get("/metrics").text
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    # What only the redis backend exports (its round trips), from a real one on the cluster.
    redis = RankdServer(
        tmp_path, {"backend": "redis", "redis_url": cluster, "redis_prefix": "dash"}
    )
    redis.start()
    try:
        with redis.client() as c:
            assert c.post("/v1/boards/d/scores", json={"member": "a", "score": 1}).is_success
            text = c.get("/metrics").text
    finally:
        redis.stop(signal.SIGTERM)
    names |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names


def test_every_expression_names_a_metric_rankd_exports(
    rankd_server, tmp_path, redis_cluster
) -> None:
    srv = rankd_server(snapshot_interval=0)
    exported = _exported(srv, tmp_path, redis_cluster)
    checked = 0
    for where, expr in _expressions():
        used = set(_METRIC.findall(expr))
        assert used, f"{where}: no rankd metric in {expr!r}"
        unknown = used - exported
        assert not unknown, f"{where} uses {sorted(unknown)}, which rankd does not export"
        checked += 1
    assert checked >= 30
