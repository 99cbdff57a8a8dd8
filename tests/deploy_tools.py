"""The command-line validators the deploy tests run (promtool, amtool, docker-compose,
systemd-analyze). `.ci/run` installs them from Debian's packages; a missing one fails the
test with the package to install (never a skip: a deploy file nobody checked is untested)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"

# tool -> the Debian package that ships it (installed by .ci/run)
PACKAGES = {
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    "docker-compose": "docker-compose",
    "systemd-analyze": "systemd",
    "busybox": "busybox",  # the shell and awk of the Prometheus and Alertmanager images
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {PACKAGES[name]} "
                    "(bash .ci/run installs it)")
    return path


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a validator; the result carries stdout and stderr for the assertion message."""
    return subprocess.run([tool(args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def clean_env(**extra: str) -> dict[str, str]:
    """PATH only (plus `extra`): the host's variables (a POSTGRES_PASSWORD, a MEMVAULT_PORT)
    must not fill in what the deploy files are expected to provide themselves."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def render(template: Path, output: Path, env: dict[str, str],
           shell: str = "sh") -> subprocess.CompletedProcess[str]:
    """What the compose stack does at a container's start: deploy/compose/render-config.sh
    fills ${NAME} in `template` from `env` (then runs `true` instead of the server)."""
    script = DEPLOY / "compose" / "render-config.sh"
    return subprocess.run([shell, str(script), str(template), str(output), "true"], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def busybox_bin(directory: Path) -> Path:
    """A PATH directory where sh, awk, mv and true are busybox, as in the prom/* images."""
    busybox = tool("busybox")
    directory.mkdir(parents=True, exist_ok=True)
    for applet in ("sh", "awk", "mv", "true"):
        (directory / applet).symlink_to(busybox)
    return directory
