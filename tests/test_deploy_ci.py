"""CI installs every validator the deploy tests run: a fresh machine must not fail them for a
missing package (and they never skip)."""

from __future__ import annotations

import re

from tests.deploy_tools import PACKAGES, ROOT


def test_ci_installs_each_deploy_tool_when_missing() -> None:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for name, package in PACKAGES.items():
        pattern = rf"command -v {re.escape(name)} >/dev/null \|\| missing\+=\({package}\)"
        assert re.search(pattern, script), f".ci/run does not install {package} for {name}"
    assert script.count("apt-get update") == 1
    assert script.index("apt-get install") < script.index("make test")
