"""Every file the console serves ships inside memvault's wheel (the package-data globs in
pyproject.toml cover it), carries its licence, and names no other host to load from."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import httpx

from memvault.config import load_settings
from memvault.embed.local import LocalEmbedder
from memvault.memory import Memory
from memvault.server import console
from memvault.server.app import app_over
from tests.peers.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(console.__file__).parent


def test_every_template_and_asset_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["memvault.server.console"]
    files = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert any(f.startswith("static/vendor/") for f in files)
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") ==
                                           g.count("/") for g in globs)]
    assert missing == []


def test_vendored_libraries_carry_their_licences() -> None:
    for library in ("swagger-ui", "redoc"):
        folder = PACKAGE / "static" / "vendor" / library
        assert (folder / "LICENSE").read_text().strip(), library
        assert (folder / "VERSION").read_text().strip(), library


def test_templates_and_stylesheet_name_no_other_host() -> None:
    for path in [*PACKAGE.glob("templates/*.html"), PACKAGE / "static" / "console.css"]:
        text = path.read_text()
        # The SVG namespace is a name, not a request.
        hosts = set(re.findall(r"(?:https?:)?//([a-z0-9.-]+\.[a-z]{2,})", text)) - {"www.w3.org"}
        assert hosts == set(), (path.name, hosts)


def test_docs_pages_point_at_the_local_assets(tmp_path: Path,
                                              local_embedder: LocalEmbedder) -> None:
    settings = load_settings({"data_dir": tmp_path,
                              "database_url": f"sqlite:///{tmp_path / 'm.db'}"})
    with Memory(settings, embedder=local_embedder) as memory, \
            LiveServer(app_over(settings, memory)) as server:
        _check_docs(server.url)


def _check_docs(live_url: str) -> None:
    for page, asset in (("/docs", "/ui/static/vendor/swagger-ui/swagger-ui-bundle.js"),
                        ("/redoc", "/ui/static/vendor/redoc/redoc.standalone.js")):
        html = httpx.get(f"{live_url}{page}").text
        assert asset in html and "cdn." not in html and "fonts.googleapis" not in html
        served = httpx.get(f"{live_url}{asset}")
        assert served.status_code == 200 and len(served.content) > 100_000


def test_ci_installs_the_browser_when_missing() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    for command, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        assert f"command -v {command} >/dev/null || missing+=({package})" in script
