"""deploy/ kept consistent with the code, since no Docker daemon or cluster runs the
files here: every variable they set is a real setting, every probe path a real route,
the ports agree, and the YAML parses. ``docker compose config`` runs where a docker
CLI with compose exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import create_app
from gateway.cli import DEMO_PORT, GRACEFUL_SHUTDOWN_S
from gateway.settings import BUNDLED_DEMO_SOURCES, ENV_VARS, Settings, load_sources

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PORT = 8000  # the container port every file uses

KNOWN_VARS = {v.name for v in ENV_VARS} | {"GATEWAY_SOURCES"}


def known(name: str) -> bool:
    return name in KNOWN_VARS or name.startswith("OTEL_")


def routes() -> set[str]:
    return {r.path for r in create_app(Settings()).routes}


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml_docs(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o.get("kind") == kind]


def containers() -> Iterator[dict[str, Any]]:
    for dep in of_kind("Deployment"):
        yield from dep["spec"]["template"]["spec"]["containers"]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_every_file_parses() -> None:
    for path in [*K8S.glob("*.yaml"), DEPLOY / "compose.yaml", DEPLOY / "prometheus.yml"]:
        assert yaml_docs(path), path
    kinds = {o["kind"] for o in k8s_objects()}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    kustomized = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert all((K8S / name).exists() for name in kustomized)


def test_every_variable_set_is_a_setting() -> None:
    names: list[str] = []
    for container in containers():
        names += [e["name"] for e in container.get("env", [])]
    for service in compose()["services"].values():
        names += list((service.get("environment") or {}).keys())
    names += re.findall(r"\b(GATEWAY_[A-Z0-9_]+)=", (DEPLOY / "Dockerfile").read_text())
    gateway_vars = [n for n in names if n.startswith(("GATEWAY_", "OTEL_"))]
    assert gateway_vars
    unknown = sorted({n for n in gateway_vars if not known(n)})
    assert not unknown, f"deploy files set variables gateway/settings.py does not read: {unknown}"


def test_probe_paths_are_routes_and_ports_agree() -> None:
    real = routes()
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    health = re.search(r"HEALTHCHECK.*?http://127\.0\.0\.1:(\d+)(/\w+)", dockerfile, re.S)
    assert health and int(health.group(1)) == PORT and health.group(2) == "/livez"
    assert f"EXPOSE {PORT}" in dockerfile and f'"--port", "{PORT}"' in dockerfile
    assert "USER 10001" in dockerfile and dockerfile.count("FROM ") >= 2

    (api,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "news-gateway"]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    assert container["args"][container["args"].index("--port") + 1] == str(PORT)
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in real and get["port"] in ports
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in real and int(annotations["prometheus.io/port"]) == PORT

    (service,) = of_kind("Service")
    assert service["spec"]["ports"][0]["targetPort"] in ports
    labels = api["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"], *(p["spec"]["selector"]["matchLabels"] for p in of_kind("PodDisruptionBudget"))):
        assert selector.items() <= labels.items()
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "news-gateway"

    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] in real
    assert job["dns_sd_configs"][0]["port"] == PORT and job["dns_sd_configs"][0]["names"] == ["gateway"]


def test_termination_grace_covers_the_drain() -> None:
    (api,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "news-gateway"]
    pod = api["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = int(pre_stop[1]) + float(env["GATEWAY_SHUTDOWN_DELAY_S"]) + GRACEFUL_SHUTDOWN_S
    assert drain <= pod["terminationGracePeriodSeconds"]


def test_secrets_are_references_and_the_sources_configmap_is_a_valid_sources_file(tmp_path: Path) -> None:
    secret_names = {o["metadata"]["name"] for o in of_kind("Secret")}
    for container in containers():
        env = {e["name"]: e for e in container["env"]}
        ref = env["GATEWAY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] in secret_names and "value" not in env["GATEWAY_DATABASE_URL"]
        mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["sources"]
        assert env["GATEWAY_SOURCES"]["value"] == f"{mount}/sources.toml"
    (config,) = of_kind("ConfigMap")
    sources_file = tmp_path / "sources.toml"
    sources_file.write_text(config["data"]["sources.toml"])
    sources = load_sources(sources_file, env={})
    key_envs = {s.api_key_env for s in sources if s.api_key_env}
    for container in containers():
        assert key_envs <= {e["name"] for e in container["env"]}


def test_compose_wiring() -> None:
    services = compose()["services"]
    assert {"postgres", "gateway", "worker", "demo", "prometheus"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "healthcheck" in services["postgres"] and services["postgres"]["volumes"]
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert services["gateway"]["ports"] == [f"8000-8001:{PORT}"]
    assert services["worker"]["command"] == ["gateway", "worker"]
    demo = services["demo"]["command"]
    assert demo[demo.index("--port") + 1] == str(DEMO_PORT)
    env = services["gateway"]["environment"]
    assert env["GATEWAY_DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["GATEWAY_DATABASE_URL"]
    # the compose sources are the demo sources pointed at the demo service
    compose_sources = (DEPLOY / "sources.compose.toml").read_text()
    demo_sources = BUNDLED_DEMO_SOURCES.read_text().replace("http://127.0.0.1:9100", f"http://demo:{DEMO_PORT}")
    assert tomllib.loads(compose_sources) == tomllib.loads(demo_sources)
    (mount,) = services["gateway"]["volumes"]
    host, container_path, _ = mount.split(":")
    assert (DEPLOY / host).resolve() == (DEPLOY / "sources.compose.toml").resolve()
    assert container_path == env["GATEWAY_SOURCES"]


def test_docker_compose_config() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI here: `docker compose config` not run")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"docker CLI without compose here ({(probe.stderr or probe.stdout).strip()}): not run")
    result = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
