"""A script run from the folder above a clone named `memvault` must import the package, not
the clone's folder (which, having no __init__.py, Python would take for an empty namespace
package: `cannot import name 'Memory' from 'memvault' (unknown location)`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "from memvault import Memory\nprint(Memory.__module__)\n"


def run_beside_a_clone(tmp_path: Path, pythonpath: str) -> subprocess.CompletedProcess[str]:
    parent = tmp_path / "src"
    parent.mkdir()
    (parent / "memvault").symlink_to(ROOT, target_is_directory=True)  # the clone
    (parent / "script.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "script.py"], cwd=parent, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_clone_on_sys_path_wins_over_its_folder(tmp_path: Path) -> None:
    # `make` installs with editable_mode=compat: one .pth line putting the clone on sys.path,
    # as PYTHONPATH does here. A regular package anywhere on sys.path beats a namespace folder.
    result = run_beside_a_clone(tmp_path, str(tmp_path / "src" / "memvault"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "memvault.memory.service"


def test_make_installs_the_clone_on_sys_path() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install --quiet (.*)", makefile)
    editable = [line for line in installs if "-e" in line or "EDITABLE" in line]
    assert editable and all("$(EDITABLE)" in line for line in editable), installs
    assert "EDITABLE := --config-settings editable_mode=compat -e" in makefile
