"""compose.yaml (no Docker daemon here): the rankd services' settings are ones rankd accepts,
they point at the cluster's nodes, and both sit behind the load balancer."""

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from service.cli import build_parser
from service.settings import load

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def test_compose_rankd_services_start_with_their_settings() -> None:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    rankd = {n: s for n, s in services.items() if n.startswith("rankd-")}
    assert len(rankd) == 2
    nodes = {n for n in services if n.startswith("redis-")}
    assert len(nodes) == 6
    for svc in rankd.values():
        env = {k: str(v) for k, v in svc["environment"].items()}
        env["RANKD_API_KEYS"] = "a-long-enough-key-0123456789:read"  # compose demands one
        argv = svc["entrypoint"][1:]
        flags = vars(build_parser().parse_args(argv))
        settings = load(env, flags)
        assert settings.backend == "redis" and settings.host == "0.0.0.0"
        seeds = {u.split("//")[1].split(":")[0] for u in settings.redis_url.split(",")}
        assert seeds <= nodes
        assert svc["build"]["args"]["RANKD_EXTRAS"] == "[redis]"
    haproxy = doc["configs"]["haproxy"]["content"]
    for name in rankd:
        assert f"server {name} {name}:8000" in haproxy
    assert "8000:8000" in services["lb"]["ports"]
