"""The OpenAPI document: valid 3.1, complete, served as built, and true of the live server.

The last test runs schemathesis (the CLI users would run) against a fresh rankd: it generates
valid and invalid requests for every operation and fails on any 5xx or on any answer whose
status, content type, headers or body the document does not describe.
"""

import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31

from service.app import SPECS
from service.openapi import document


def _schemas(node: object):
    """Every Schema Object in the document (component schemas and inline ones)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            else:
                yield from _schemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schemas(item)


def test_document_is_valid_openapi_31() -> None:
    doc = document(SPECS)
    validator = jsonschema_rs.Draft202012Validator(OPENAPI_31)
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []
    # The 3.1 meta-schema does not descend into Schema Objects: check each as JSON Schema.
    for schema in [*doc["components"]["schemas"].values(), *_schemas(doc["paths"])]:
        jsonschema_rs.meta.validate(schema)


def test_every_route_is_documented_and_nothing_else() -> None:
    doc = document(SPECS)
    routed = {(spec.path, spec.method.lower()) for spec in SPECS} | {("/", "get")}
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert routed == documented
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert any(code.startswith("2") for code in op["responses"]), (path, method)
            if path.startswith("/v1/"):
                assert {"400", "404"} <= set(op["responses"]) or path == "/v1/admin/snapshot"


def test_served_document_is_the_built_one(http: httpx.Client) -> None:
    r = http.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == document(SPECS)


def test_schemathesis_finds_no_server_errors_or_nonconformance(rankd_server, tmp_path) -> None:
    srv = rankd_server()
    checks = ",".join(
        [
            "not_a_server_error",
            "status_code_conformance",
            "content_type_conformance",
            "response_headers_conformance",
            "response_schema_conformance",
            "negative_data_rejection",
        ]
    )
    # 413 is the right answer to a batch over its limit (schemathesis expects 4xx but 413).
    # 412 and 415 reject too: RFC 9110 judges If-Match/If-None-Match before the body, and
    # a body of the wrong media type is refused before it is parsed.
    (tmp_path / "schemathesis.toml").write_text(
        "[checks.negative_data_rejection]\n"
        'expected-statuses = ["400", "401", "403", "404", "405", "409", "412", "413", "415"]\n'
    )
    cli = Path(sys.executable).with_name("schemathesis")
    r = subprocess.run(
        [
            str(cli),
            "run",
            f"{srv.url}/openapi.json",
            f"--checks={checks}",
            "--max-examples=15",
            "--seed=1",
            "--workers=1",
            "--generation-database=none",
            # Without keys no route needs auth: generated Authorization headers prove nothing.
            "--generation-with-security-parameters=false",
            "--request-timeout=10",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_PROXY": "*"},
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "passed" in r.stdout
    assert "Exception" not in srv.logs(), srv.logs()
