"""deploy/compose: `docker-compose config` (Debian's docker-compose validates the file against
the compose schema and fills in .env; no daemon) and what the rendered stack says: every
MEMVAULT_* variable is a real memvault setting, every port and credential comes from .env
alone (change it there and it changes everywhere), backups live on their own volume."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from memvault.config import Settings, load_settings
from tests.deploy_tools import DEPLOY, ROOT, busybox_bin, clean_env, render, run

COMPOSE = DEPLOY / "compose"
ENV_EXAMPLE = COMPOSE / ".env.example"
# .env values that must never be written anywhere else (ports and credentials).
PINNED = re.compile(r"(_PORT|_PASSWORD|_KEY|_TOKEN|_URL|_CHAT_ID)$")


def read_env(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def compose_config(env_file: Path) -> dict[str, Any]:
    result = run(["docker-compose", "--env-file", str(env_file), "-f",
                  str(COMPOSE / "docker-compose.yml"), "config"], env=clean_env())
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def altered(values: dict[str, str]) -> dict[str, str]:
    """Every pinned value changed (ports moved by 1000, secrets replaced)."""
    out = dict(values)
    for key, value in values.items():
        if key.endswith("_PORT"):
            out[key] = str(int(value) + 1000)
        elif key.endswith("_CHAT_ID"):
            out[key] = "-100777"
        elif PINNED.search(key):
            out[key] = ("https://alt.example.test/hook" if "://" in value
                        else f"x{key.lower()}-42")
    return out


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()}


def rendered(template: Path, service: dict[str, Any], tmp_path: Path) -> str:
    out = tmp_path / f"{template.parent.name}-{template.name}"
    result = render(template, out, clean_env(**environment(service)))
    assert result.returncode == 0, result.stderr
    return out.read_text()


def mount_source(service: dict[str, Any], target: str) -> str:
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return source
    raise AssertionError(f"nothing is mounted at {target}: {service['volumes']}")


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return read_env(ENV_EXAMPLE)


def test_compose_validates_with_the_example_env(example: dict[str, str]) -> None:
    config = compose_config(ENV_EXAMPLE)
    assert set(config["services"]) == {"postgres", "memvault", "prometheus", "alertmanager",
                                       "grafana"}
    assert config["services"]["postgres"]["image"].startswith("pgvector/pgvector:")
    assert example["COMPOSE_PROJECT_NAME"]


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    """docker-compose validates against the compose schema: a misspelt key is refused."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((COMPOSE / "docker-compose.yml").read_text().replace(
        "restart: unless-stopped", "restartt: unless-stopped", 1))
    result = run(["docker-compose", "--env-file", str(ENV_EXAMPLE), "-f", str(broken),
                  "config"], env=clean_env())
    assert result.returncode != 0 and "restartt" in result.stderr, result.stderr


def test_a_missing_env_variable_stops_compose(tmp_path: Path, example: dict[str, str]) -> None:
    for key in ("POSTGRES_PASSWORD", "MEMVAULT_PORT", "MEMVAULT_ADMIN_API_KEY"):
        env = write_env(tmp_path / ".env", {k: v for k, v in example.items() if k != key})
        result = run(["docker-compose", "--env-file", str(env), "-f",
                      str(COMPOSE / "docker-compose.yml"), "config"], env=clean_env())
        assert result.returncode != 0 and key in result.stderr, (key, result.stderr)


def test_every_memvault_variable_is_a_real_setting(example: dict[str, str]) -> None:
    config = compose_config(ENV_EXAMPLE)
    named = {k for k in example if k.startswith("MEMVAULT_")}
    for service in config["services"].values():
        named |= {k for k in environment(service) if k.startswith("MEMVAULT_")}
    dockerfile = (ROOT / "Dockerfile").read_text()
    named |= set(re.findall(r"\b(MEMVAULT_[A-Z_]+)=", dockerfile))
    fields = {f"MEMVAULT_{name.upper()}" for name in Settings.model_fields}
    assert named and named <= fields, named - fields
    # memvault's own environment loads through the settings model as it would in the image
    memvault = environment(config["services"]["memvault"])
    image_env = dict(re.findall(r"\b(MEMVAULT_[A-Z_]+)=(\S+)", dockerfile))
    merged = {**image_env, **memvault}
    settings = load_settings({k.removeprefix("MEMVAULT_").lower(): v for k, v in merged.items()})
    assert settings.database_url == (
        f"postgresql://{example['POSTGRES_USER']}:{example['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{example['POSTGRES_DB']}")
    assert settings.port == int(example["MEMVAULT_PORT"])
    assert settings.host == "0.0.0.0" and settings.admin_api_key is not None


def test_ports_and_credentials_come_from_env_only(tmp_path: Path,
                                                  example: dict[str, str]) -> None:
    """Render the stack with every port and secret changed: none of the example's values may
    survive anywhere (it would be written twice), and each consumer sees the new one."""
    values = altered(example)
    config = compose_config(write_env(tmp_path / "alt.env", values))
    services = config["services"]
    prometheus_yml = rendered(COMPOSE / "prometheus.yml", services["prometheus"], tmp_path)
    alertmanager_yml = rendered(DEPLOY / "alertmanager" / "alertmanager.yml",
                                services["alertmanager"], tmp_path)
    datasource_yml = rendered(COMPOSE / "grafana" / "provisioning" / "datasources" /
                              "prometheus.yml", services["grafana"], tmp_path)
    everything = "\n".join([yaml.safe_dump(config), prometheus_yml, alertmanager_yml,
                            datasource_yml])
    for key, value in example.items():
        if PINNED.search(key) and value:
            assert value not in everything, f"{key}={value} is written outside .env"

    memvault = environment(services["memvault"])
    postgres = environment(services["postgres"])
    assert memvault["MEMVAULT_DATABASE_URL"] == (
        f"postgresql://{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{postgres['POSTGRES_DB']}")
    port = values["MEMVAULT_PORT"]
    assert memvault["MEMVAULT_PORT"] == port
    assert any(p.get("target") == int(port) and p.get("published") == int(port)
               if isinstance(p, dict) else p.endswith(f":{port}:{port}/tcp")
               for p in services["memvault"]["ports"]), services["memvault"]["ports"]
    scrape = yaml.safe_load(prometheus_yml)["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == [f"memvault:{port}"]
    assert scrape["authorization"]["credentials"] == memvault["MEMVAULT_ADMIN_API_KEY"]
    alerting = yaml.safe_load(prometheus_yml)["alerting"]["alertmanagers"][0]
    assert alerting["static_configs"][0]["targets"] == [
        f"alertmanager:{values['ALERTMANAGER_PORT']}"]
    assert f"--web.listen-address=:{values['ALERTMANAGER_PORT']}" in \
        services["alertmanager"]["command"]
    assert f"--web.listen-address=:{values['PROMETHEUS_PORT']}" in \
        services["prometheus"]["command"]
    source = yaml.safe_load(datasource_yml)["datasources"][0]
    assert source["url"] == f"http://prometheus:{values['PROMETHEUS_PORT']}"
    assert environment(services["grafana"])["GF_SERVER_HTTP_PORT"] == values["GRAFANA_PORT"]


def test_rendered_prometheus_config_is_valid_and_loads_the_shipped_rules(
        tmp_path: Path) -> None:
    services = compose_config(ENV_EXAMPLE)["services"]
    text = rendered(COMPOSE / "prometheus.yml", services["prometheus"], tmp_path)
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    check = run(["promtool", "check", "config", "--syntax-only", str(config)])
    assert check.returncode == 0, check.stdout + check.stderr
    [rule_file] = yaml.safe_load(text)["rule_files"]
    source = Path(mount_source(services["prometheus"], rule_file))
    assert source.resolve() == (DEPLOY / "prometheus" / "memvault-alerts.yml").resolve()
    template = mount_source(services["prometheus"], "/etc/memvault-deploy/prometheus.yml")
    assert Path(template).resolve() == (COMPOSE / "prometheus.yml").resolve()


def test_every_mounted_file_ships_in_the_repo_and_grafana_gets_the_board() -> None:
    services = compose_config(ENV_EXAMPLE)["services"]
    named = set(compose_config(ENV_EXAMPLE)["volumes"])
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in named or Path(source).exists(), (volume, "missing in the repo")
    provider = yaml.safe_load((COMPOSE / "grafana" / "provisioning" / "dashboards" /
                               "memvault.yml").read_text())
    folder = provider["providers"][0]["options"]["path"]
    board = mount_source(services["grafana"], f"{folder}/memvault-dashboard.json")
    assert Path(board).resolve() == (DEPLOY / "grafana" / "memvault-dashboard.json").resolve()
    assert mount_source(services["grafana"], "/etc/grafana/provisioning")


def test_database_data_and_backups_are_separate_named_volumes() -> None:
    config = compose_config(ENV_EXAMPLE)
    services = config["services"]
    pgdata = mount_source(services["postgres"], "/var/lib/postgresql/data")
    backups_dir = environment(services["memvault"])["MEMVAULT_BACKUP_URLS"]
    backups = mount_source(services["memvault"], backups_dir)
    data = mount_source(services["memvault"], "/data")
    assert {pgdata, backups, data} <= set(config["volumes"])  # named, they survive `down`
    assert len({pgdata, backups, data}) == 3


@pytest.mark.parametrize("shell", ["host", "busybox"])
def test_render_config_substitutes_literally_and_refuses_unset_names(
        tmp_path: Path, shell: str) -> None:
    template = tmp_path / "template.yml"
    template.write_text("# ${NOT_SET} in a comment stays\n"
                        "a: '${ONE}' b: ${TWO}${ONE}\n"
                        "c: ${NOT_SET}\n")
    path = str(busybox_bin(tmp_path / "bin")) if shell == "busybox" else None
    sh = str(tmp_path / "bin" / "sh") if shell == "busybox" else "sh"
    awkward = r"x&y|z\1 $HOME ${TWO}"  # sed-hostile characters, and no re-expansion
    env = clean_env(ONE=awkward, TWO="2", NOT_SET="set")
    if path:
        env["PATH"] = path
    out = tmp_path / "out.yml"
    result = render(template, out, env, shell=sh)
    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == [
        "# ${NOT_SET} in a comment stays", f"a: '{awkward}' b: 2{awkward}", "c: set"]
    del env["NOT_SET"]
    failed = render(template, tmp_path / "other.yml", env, shell=sh)
    assert failed.returncode != 0 and "NOT_SET is not set" in failed.stderr
    assert not (tmp_path / "other.yml").exists()
