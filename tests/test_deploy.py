"""``sgnb dockerfile``: the Dockerfile parses and is pinned, the entrypoint is sound shell."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sgnb.core.version_check import SGLANG_PIN
from sgnb.tools.deploy import dockerfile, entrypoint, write_files

if TYPE_CHECKING:
    from dockerfile_parse import DockerfileParser
else:  # a CPU-only test dependency: `pytest -m gpu` on the GPU image collects this module without it
    DockerfileParser = pytest.importorskip("dockerfile_parse").DockerfileParser


def parse(text: str) -> DockerfileParser:
    # A parser without a fileobj reads and writes ./Dockerfile: give it one in memory.
    parser = DockerfileParser(fileobj=io.BytesIO())
    parser.content = text
    return parser


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == name]


@pytest.mark.parametrize("base", ["sglang", "slim"])
def test_dockerfile_parses_and_is_pinned(base: str) -> None:
    parser = parse(dockerfile("HuggingFaceTB/SmolLM2-135M-Instruct", 30000, base))
    if base == "sglang":
        assert parser.baseimage == f"lmsysorg/sglang:v{SGLANG_PIN}"
    else:
        assert parser.baseimage == "python:3.11-slim"
        assert any(f'"sglang=={SGLANG_PIN}"' in run for run in instructions(parser, "RUN"))
    assert ":" in parser.baseimage and not parser.baseimage.endswith(":latest")
    assert instructions(parser, "EXPOSE") == ["30000"]
    users = instructions(parser, "USER")
    assert users and users[-1] not in ("root", "0")
    assert parser.envs["MODEL_PATH"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert parser.envs["PORT"] == "30000"
    health = instructions(parser, "HEALTHCHECK")
    assert health and "/health" in health[0]
    assert instructions(parser, "ENTRYPOINT") == ['["/usr/local/bin/sgnb-entrypoint.sh"]']
    assert any("entrypoint.sh" in c for c in instructions(parser, "COPY"))


def test_dockerfile_options() -> None:
    parser = parse(dockerfile("/models/my model", 8080, image="registry.local/sglang:v1-cu130"))
    assert parser.baseimage == "registry.local/sglang:v1-cu130"
    assert instructions(parser, "EXPOSE") == ["8080"]
    assert parser.envs["MODEL_PATH"] == "/models/my model"
    with pytest.raises(ValueError):
        dockerfile("bad\nmodel")
    with pytest.raises(ValueError):
        dockerfile(port=70000)
    with pytest.raises(ValueError):
        dockerfile(base="alpine")


def test_write_files(tmp_path: Path) -> None:
    docker, entry = write_files(tmp_path / "out")
    assert docker.name == "Dockerfile" and entry.name == "entrypoint.sh"
    assert os.access(entry, os.X_OK)
    assert entry.read_text() == entrypoint()


def test_entrypoint_passes_bash_n(tmp_path: Path) -> None:
    script = write_files(tmp_path)[1]
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck missing: apt-get install -y shellcheck"
)
def test_entrypoint_passes_shellcheck(tmp_path: Path) -> None:
    script = write_files(tmp_path)[1]
    done = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_entrypoint_execs_launch_server_with_env(tmp_path: Path) -> None:
    """Run the real script with a stand-in python3 on PATH that prints its arguments."""
    script = write_files(tmp_path / "out")[1]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    (fake / "python3").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "MODEL_PATH": "org/My Model"}
    done = subprocess.run([str(script), "--tp-size", "2"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    args = done.stdout.splitlines()
    assert args == [
        "-m", "sglang.launch_server", "--model-path", "org/My Model", "--host", "0.0.0.0", "--port", "30000",
        "--tp-size", "2",
    ]  # fmt: skip
    done = subprocess.run(
        [str(script)], capture_output=True, text=True, env={**env, "HOST": "127.0.0.1", "PORT": "8000"}
    )
    assert done.stdout.splitlines()[-4:] == ["--host", "127.0.0.1", "--port", "8000"]
    done = subprocess.run([str(script)], capture_output=True, text=True, env={"PATH": env["PATH"]})
    assert done.returncode == 64 and "MODEL_PATH" in done.stderr
