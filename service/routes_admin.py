"""Operations routes: liveness, readiness, metrics, the API documents, snapshots.

/healthz answers 200 as long as the event loop runs (a process that cannot answer it is dead).
/readyz answers 503 until recovery has loaded the snapshot and replayed the journal: a load
balancer must not send traffic to a node whose data is still half-loaded.
"""

from starlette.requests import Request
from starlette.responses import Response

from service import asyncapi, openapi
from service.auth import ADMIN, METRICS
from service.backend.api import Backend
from service.errors import Problem, problem_response
from service.http import RouteSpec, json_response
from service.metrics import CONTENT_TYPE, Metrics

_OK = b'{"status":"ok"}'


async def healthz(request: Request) -> Response:
    return Response(_OK, media_type="application/json")


async def readyz(request: Request, backend: Backend) -> Response:
    if backend.ready:
        return json_response({"status": "ready", "epoch": backend.epoch})
    if backend.fatal is not None:
        return problem_response(503, "start-up-failed", "start-up failed; see the server log")
    reason = backend.health()["reason"] or "recovering data from disk"
    return problem_response(503, "not-ready", f"not ready yet: {reason}")


async def metrics(request: Request, metrics: Metrics) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)


async def openapi_json(request: Request) -> Response:
    # The app's routes come from app.state: service.app imports this module.
    specs = request.app.state.specs
    return Response(openapi.document_bytes(specs), media_type="application/json")


async def asyncapi_json(request: Request) -> Response:
    return Response(asyncapi.document_bytes(), media_type="application/json")


async def snapshot(request: Request, backend: Backend) -> Response:
    try:
        return json_response(await backend.snapshot())
    except NotImplementedError:
        # A backend without local disk (redis): its durability is the cluster's.
        raise Problem(
            501, "not-implemented", "this backend takes no snapshots; see README, Durability"
        ) from None


ROUTES = [
    RouteSpec("GET", "/healthz", healthz, None, gated=False),
    RouteSpec("GET", "/readyz", readyz, None, gated=False),
    RouteSpec("GET", "/metrics", metrics, METRICS, gated=False),
    RouteSpec("GET", "/openapi.json", openapi_json, None, gated=False),
    RouteSpec("GET", "/asyncapi.json", asyncapi_json, None, gated=False),
    RouteSpec("POST", "/v1/admin/snapshot", snapshot, ADMIN),
]
