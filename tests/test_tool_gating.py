"""tests/conftest.py on a real pytest run: a missing tool deselects its tests with a summary
line; under CI=true the same run fails. PATH is emptied of everything but a directory that
holds no promtool, which is how a laptop without Debian's prometheus package looks."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Node ids, not -k: a -k deselection would count against CI too. One test needs promtool.
TARGETS = [
    "tests/service/test_deploy.py::test_promtool_checks_and_unit_tests_the_alert_rules",
    "tests/service/test_deploy.py::test_the_rules_cover_what_on_call_needs",
]


def _pytest(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    bare = tmp_path / "bin"
    bare.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PATH"] = str(bare)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", *TARGETS, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_a_missing_tool_deselects_its_tests_with_a_summary_line(tmp_path) -> None:
    r = _pytest(tmp_path, ci=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "deselected 1 test(s) needing promtool (not on PATH)" in r.stdout
    assert "1 passed, 1 deselected" in r.stdout and "skipped" not in r.stdout


def test_ci_fails_when_anything_was_deselected(tmp_path) -> None:
    r = _pytest(tmp_path, ci=True)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "CI=true: 0 skipped and 1 deselected test(s)" in r.stdout
