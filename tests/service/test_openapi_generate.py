"""A mainstream generator reads the served OpenAPI document whole, and its client works.

``openapi-python-client generate`` runs on ``/openapi.json`` fetched from a real rankd (the
CLI, as users run it, with its default ruff post-hooks). The run fails on any line it prints
beyond "Generating ..." -- that is where it reports a schema it could not parse and the
response or model it dropped because of it (two components named ``SessionData`` once cost
every session answer). Then every operation must have its module under its tag, every 2xx
answer its model, every component its model, and the generated package must import and talk
to the server.

The lockstep test holds ``service.schemas``' TypedDicts (what the backend answers) to their
components (what the document promises).
"""

import json
import keyword
import os
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import httpx

from service import schemas
from service.app import SPECS
from service.openapi import document

PACKAGE = "rankd_api"


def _snake(name: str) -> str:
    """openapi-python-client's module names: RankAnswer -> rank_answer, get -> get_."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).replace("-", "_").lower()
    return words + "_" if keyword.iskeyword(words) else words


def _generate(doc: dict, out: Path) -> subprocess.CompletedProcess[str]:
    (out / "doc.json").write_text(json.dumps(doc))
    (out / "config.yaml").write_text(
        f"package_name_override: {PACKAGE}\nproject_name_override: rankd-api\n"
    )
    cli = Path(sys.executable).with_name("openapi-python-client")
    bin_dir = str(Path(sys.executable).parent)  # its post-hooks run ruff from the venv
    return subprocess.run(
        [str(cli), "generate", "--path", "doc.json", "--config", "config.yaml"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=out,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(out), "NO_COLOR": "1"},
    )


_SMOKE = """
import importlib, json, pkgutil, sys
import rankd_api
from rankd_api import Client
from rankd_api.api.boards import post_score, top
from rankd_api.api.sessions import create, get
from rankd_api.models import Page, ScoreWrite, Session, SessionCreate, WriteResult

modules = [m.name for m in pkgutil.walk_packages(rankd_api.__path__, "rankd_api.")]
for name in modules:
    importlib.import_module(name)
c = Client(base_url=sys.argv[1], raise_on_unexpected_status=True)
board = sys.argv[2]
wrote = post_score.sync(board=board, client=c, body=ScoreWrite(member="ann", score=42))
assert isinstance(wrote, WriteResult), wrote
page = top.sync(board=board, client=c, limit=5)
assert isinstance(page, Page), page
s = create.sync(client=c, body=SessionCreate.from_dict({"user": board, "data": {"a": 1}}))
assert isinstance(s, Session), s
got = get.sync(id=s.id, client=c)
assert isinstance(got, Session), got
print(json.dumps({
    "modules": len(modules),
    "write": [wrote.member, wrote.score, wrote.rank, wrote.changed],
    "top": [[e.rank, e.member, e.score] for e in page.entries],
    "session": [got.id == s.id, got.user, got.data.to_dict(), got.version],
}))
"""


def test_openapi_python_client_generates_everything_with_no_warning(server, name, tmp_path):
    doc = httpx.get(f"{server.url}/openapi.json", trust_env=False).json()
    assert doc == document(SPECS)
    r = _generate(doc, tmp_path)
    printed = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert r.returncode == 0, printed
    assert printed == [f"Generating {tmp_path / 'rankd-api'}"], "\n".join(printed)

    pkg = tmp_path / "rankd-api" / PACKAGE
    models = {p.stem for p in (pkg / "models").glob("*.py")}
    for component in doc["components"]["schemas"]:
        assert _snake(component) in models, component
    operations = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            operations += 1
            module = pkg / "api" / op["tags"][0] / f"{_snake(op['operationId'])}.py"
            assert module.exists(), (method, path, module)
            source = module.read_text()
            assert f'"method": "{method}"' in source, (method, path)
            for code, answer in op["responses"].items():
                for media in answer.get("content", {}).values():
                    ref = media["schema"].get("$ref")
                    if ref is not None:
                        model = ref.rpartition("/")[2]
                        parsed = f"response_{code} = {model}.from_dict(response.json())"
                        assert parsed in source, (method, path, code)
    assert operations == len(list((pkg / "api").glob("*/*.py"))) - len(doc["tags"])

    env = {**os.environ, "PYTHONPATH": str(pkg.parent), "NO_PROXY": "*"}
    run = subprocess.run(
        [sys.executable, "-c", _SMOKE, server.url, name],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    seen = json.loads(run.stdout)
    assert seen["modules"] > operations
    assert seen["write"] == ["ann", 42, 1, True]
    assert seen["top"] == [[1, "ann", 42]]
    assert seen["session"] == [True, name, {"a": 1}, 1]


def test_generator_catches_a_model_name_clash(tmp_path):
    """The check above can fail: the old component name makes the generator drop models."""
    doc = document(SPECS)
    components = doc["components"]["schemas"]
    components["SessionData"] = components.pop("SessionDataWrite")
    text = json.dumps(doc).replace("/SessionDataWrite", "/SessionData")
    r = _generate(json.loads(text), tmp_path)
    out = r.stdout + r.stderr
    assert 'duplicate models with name "SessionData"' in out, out[-3000:]


_JSON_TYPES: dict[object, set[str]] = {
    str: {"string"},
    int: {"integer", "number"},
    float: {"number"},
    bool: {"boolean"},
    list: {"array"},
    dict: {"object"},
    type(None): {"null"},
}


def _json_types(annotation: object) -> set[str]:
    """The JSON types a Python annotation may take; empty for Any (anything goes)."""
    if annotation is typing.Any:
        return set()
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        found: set[str] = set()
        for arg in typing.get_args(annotation):
            found |= _json_types(arg)
        return found
    if typing.is_typeddict(annotation):
        return {"object"}
    return _JSON_TYPES[origin or annotation]


def _schema_types(schema: dict) -> set[str]:
    if "$ref" in schema or "oneOf" in schema:
        return set()
    if "enum" in schema:
        return {"string"}
    kind = schema["type"]
    return set(kind) if isinstance(kind, list) else {kind}


def test_typed_wire_shapes_and_components_agree():
    assert schemas.TYPED, "no TypedDict is held to a component"
    for component, typed in schemas.TYPED.items():
        schema = schemas.SCHEMAS[component]
        hints = typing.get_type_hints(typed)
        assert set(hints) == set(schema["properties"]), component
        assert typed.__required_keys__ == set(schema["required"]), component  # type: ignore[attr-defined]
        for field, annotation in hints.items():
            python, promised = _json_types(annotation), _schema_types(schema["properties"][field])
            if python and promised:
                assert promised <= python or python <= promised, (component, field)
