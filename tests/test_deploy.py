"""The deployment files, checked statically: no Docker engine or cluster runs here.

Prometheus configuration, alert rules and their unit tests go through
``promtool``; every dashboard expression is checked by promtool and against
the metrics the worker declares; the compose file is validated against the
compose specification's JSON schema (vendored by check-jsonschema) and
cross-checked; Dockerfile and Kubernetes manifests get the checks that catch
real mistakes (see docs/operations.md, "What is validated").
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from monitor import metrics
from monitor.kafka.local import kafka_version
from monitor.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
WORKER_JOB = "castwatch-worker"
WEB_PORT = 6066
KNOWN_KINDS = {
    ("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("apps/v1", "Deployment"),
    ("batch/v1", "Job"), ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}  # fmt: skip
PROMQL_WORDS = {"and", "or", "unless", "bool", "inf", "nan"}


def promtool(*args: str, cwd: Path = ROOT) -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool is missing: install Debian's prometheus package (scripts/bootstrap does)"
    done = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def settings_variables() -> set[str]:
    """Every CASTWATCH_* name monitor/settings.py reads."""
    return set(re.findall(r'"(CASTWATCH_[A-Z_]+)"', (ROOT / "monitor" / "settings.py").read_text()))


def exported_metrics() -> set[str]:
    """Series names the worker exports (monitor/metrics.py), plus Prometheus's own ``up``."""
    names = {"up"}
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not its functions, labels, keywords or durations)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+\w+", " ", s)
    names = set()
    for name, call in re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", s):
        if not call and name not in PROMQL_WORDS:
            names.add(name)
    return names


def dashboard_exprs() -> Iterator[tuple[str, str, str]]:
    """(dashboard, panel title, expression) of every query in the provisioned dashboards."""
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                yield path.name, panel["title"], target["expr"]


# --- Prometheus -----------------------------------------------------------------------------------


def test_metric_name_extraction() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, instance) (rate(castwatch_chunk_processing_seconds_bucket{job="a"}[5m])))'
    assert metric_names(expr) == {"castwatch_chunk_processing_seconds_bucket"}
    assert metric_names("time() - max by (stream) (x_seconds) > 120 and up offset 5m or vector(0)") == {"x_seconds", "up"}


def test_prometheus_config_and_rules_pass_promtool() -> None:
    out = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS: 1 rule files found" in out
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))


def test_alert_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    alerts = {rule["alert"] for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]}
    assert alerts == {
        "CastwatchStreamSilent", "CastwatchWorkerDown", "CastwatchLagGrowing", "CastwatchProcessingSlow",
        "CastwatchInfringementSpike", "CastwatchDeadLettersRising",
    }  # fmt: skip
    cases = [case for test in load_yaml(PROMETHEUS / "alerts_test.yml")["tests"] for case in test["alert_rule_test"]]
    for alert in alerts:
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == alert}
        assert outcomes == {True, False}, f"{alert}: needs a case where it fires and one where it stays quiet"


def test_alert_rules_use_only_exported_metrics_and_the_worker_job() -> None:
    known = exported_metrics()
    for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            assert metric_names(rule["expr"]) <= known, f"{rule['alert']}: {metric_names(rule['expr']) - known}"
            assert set(re.findall(r'job="([^"]+)"', rule["expr"])) <= {WORKER_JOB}
    jobs = [job["job_name"] for job in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]]
    assert jobs == [WORKER_JOB]
    assert [job["job_name"] for job in load_yaml(DEPLOY / "k8s" / "prometheus.yml")["scrape_configs"]] == [WORKER_JOB]


# --- Grafana --------------------------------------------------------------------------------------


def test_every_dashboard_expression_passes_promtool(tmp_path: Path) -> None:
    exprs = list(dashboard_exprs())
    assert len(exprs) >= 20
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": expr} for i, (_, _, expr) in enumerate(exprs)
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in promtool("check", "rules", str(path))


def test_every_dashboard_metric_is_one_the_worker_exports() -> None:
    known = exported_metrics()
    used: set[str] = set()
    for dashboard, title, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"{dashboard} / {title}: selects no series: {expr}"
        assert names <= known, f"{dashboard} / {title}: unknown metrics {names - known}"
        used |= names
    # The panels the issue asks for, by the metrics behind them.
    for needed in ("castwatch_stream_last_audio_timestamp_seconds", "castwatch_audio_seconds_total",
                   "castwatch_chunk_processing_seconds_bucket", "castwatch_detection_latency_seconds_bucket",
                   "castwatch_consumer_lag_messages", "castwatch_play_events_total", "castwatch_infringements_total",
                   "castwatch_dlq_messages_total", "castwatch_index_bytes"):  # fmt: skip
        assert needed in used, f"no panel shows {needed}"


def test_dashboards_use_the_provisioned_datasource_and_a_sane_layout() -> None:
    datasources = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    uids = {ds["uid"] for ds in datasources if ds["type"] == "prometheus"}
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "castwatch.yml")["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, f"{path.name} / {panel['title']}: off the grid"
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] in uids, f"{path.name} / {panel['title']}: unknown datasource"


# --- compose --------------------------------------------------------------------------------------


def interpolate(text: str) -> str:
    """Compose's variable substitution with every variable unset: defaults, and a stand-in for required ones."""
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", text)
    text = re.sub(r"\$\{(\w+)(?::\?[^}]*)?\}", "set-in-env", text)
    return text.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text()))


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    validator = jsonschema.Draft7Validator(schema)  # its $schema names draft 07 by a URL jsonschema does not map
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)
    broken = dict(compose, services=dict(compose["services"], worker={**compose["services"]["worker"], "restart": 3}))
    assert not validator.is_valid(broken)  # the schema does catch a mistake


def test_compose_references_resolve(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "postgres", "migrate", "roles", "worker", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on a service that does not exist: {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
    assert services["worker"]["depends_on"]["roles"]["condition"] == "service_completed_successfully"
    assert services["roles"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_castwatch_services_read_only_settings_castwatch_knows(compose: dict[str, Any]) -> None:
    known = settings_variables()
    castwatch = {name: s for name, s in compose["services"].items() if s.get("image", "").startswith("castwatch:")}
    assert set(castwatch) == {"migrate", "worker"}
    for name, service in castwatch.items():
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name}: settings.py does not read {unknown}"
        Settings.from_env({k: str(v) for k, v in service["environment"].items()})  # the values parse too


def test_compose_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]
    command = worker["command"]
    assert command[command.index("--web-port") + 1] == str(WEB_PORT) and str(WEB_PORT) in worker["expose"]
    assert worker["environment"]["CASTWATCH_WEB_HOST"] == "0.0.0.0"
    (sd,) = load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"][0]["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == WEB_PORT
    kafka = services["kafka"]["environment"]
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version()}"  # the broker the tests run
    assert worker["environment"]["CASTWATCH_BROKER_URL"] == kafka["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16
    assert "castwatch_worker_login:" in worker["environment"]["CASTWATCH_DATABASE_URL"]
    assert "castwatch_worker_login LOGIN IN ROLE castwatch_worker" in (DEPLOY / "postgres" / "logins.sql").read_text()
    prometheus_mount = next(v for v in services["prometheus"]["volumes"] if v.startswith("./prometheus:"))
    assert prometheus_mount.split(":")[1] == "/etc/prometheus"
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "127.0.0.1:9090:9090" in services["prometheus"]["ports"]
    assert all(port.startswith("127.0.0.1:") for s in services.values() for port in s.get("ports", []))


def test_every_compose_variable_is_in_the_env_example() -> None:
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    listed = {line.split("=")[0] for line in (DEPLOY / ".env.example").read_text().splitlines() if "=" in line}
    assert used - {"CASTWATCH_VERSION"} == listed


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_is_pinned_small_and_not_root() -> None:
    steps = dockerfile()
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    assert len(bases) == 2, "two stages: build, runtime"
    for base in bases:
        name, _, tag = base.partition(":")
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"base image {base}: pin a full version"
    assert not any(op == "ADD" for op, _ in steps), "use COPY (ADD fetches URLs and unpacks archives)"
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    runtime = steps[[i for i, (op, _) in enumerate(steps) if op == "FROM"][-1]:]
    assert any(op == "RUN" and "ffmpeg" in args for op, args in runtime), "URL capture needs ffmpeg"
    home = re.search(r"--home-dir (\S+)", next(a for op, a in runtime if op == "RUN" and "useradd" in a)).group(1)
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args for op, args in runtime if op == "ENV")))
    assert env["NUMBA_CACHE_DIR"].startswith(home + "/"), "the Numba cache must be the user's to write"
    castwatch_env = {k for k in env if k.startswith("CASTWATCH_")}
    assert castwatch_env <= settings_variables()
    assert ("EXPOSE", str(WEB_PORT)) in runtime
    (health,) = [args for op, args in runtime if op == "HEALTHCHECK"]
    assert f"127.0.0.1:{WEB_PORT}/livez" in health
    warm = [i for i, (op, args) in enumerate(runtime) if op == "RUN" and "fingerprint index" in args]
    assert warm and runtime.index(("USER", users[-1])) < warm[0], "warm the cache as the user that runs the image"


def cached_kernels() -> set[str]:
    """module.function of every ``cache=True`` Numba kernel in the engine."""
    kernels = set()
    for path in (ROOT / "fingerprint").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    keywords = decorator.keywords if isinstance(decorator, ast.Call) else []
                    if any(k.arg == "cache" and getattr(k.value, "value", None) is True for k in keywords):
                        kernels.add(f"{path.stem}.{node.name}")
    return kernels


@pytest.mark.slow
def test_the_dockerfile_warm_up_compiles_every_numba_kernel(tmp_path: Path) -> None:
    """Run the image's warm-up step here, into an empty cache: every kernel must land in it."""
    (warm,) = [args for op, args in dockerfile() if op == "RUN" and "fingerprint index" in args]
    script = warm.replace("/tmp/", f"{tmp_path}/")
    bindir = Path(sys.executable).parent  # the test's environment stands in for the image's /opt/castwatch
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=str(ROOT))
    done = subprocess.run(["sh", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    compiled = {re.sub(r"-\d+\.py\d+\.nbi$", "", p.name) for p in (tmp_path / "numba").rglob("*.nbi")}
    kernels = cached_kernels()
    assert len(kernels) >= 15
    assert kernels <= compiled, f"not compiled by the warm-up: {sorted(kernels - compiled)}"


# --- Kubernetes -----------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [dict(doc, _file=path.name) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (500m, 2, 2Gi, 3600Mi) as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([\d.]+)([a-zA-Z]*)", str(value))
    assert match and (match.group(2) in units or not match.group(2)), f"not a quantity: {value}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def test_manifests_are_known_kinds_and_all_deployed() -> None:
    docs = manifests()
    for doc in docs:
        assert (doc["apiVersion"], doc["kind"]) in KNOWN_KINDS, f"{doc['_file']}: unknown {doc['apiVersion']}/{doc['kind']}"
    (kustomization,) = [doc for doc in docs if doc["kind"] == "Kustomization"]
    listed = set(kustomization["resources"])
    files = {path.name for path in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert listed == files
    assert all(doc["kind"] == "Secret" for doc in docs if doc["_file"] == "secrets.example.yaml")


def test_worker_deployment_is_wired() -> None:
    docs = manifests()
    deployment = named(docs, "Deployment")["castwatch-worker"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = named(docs, "Service")["castwatch-worker"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = pod["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    args = container["args"]
    assert ports["http"] == WEB_PORT == int(args[args.index("--web-port") + 1])
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(WEB_PORT)
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"
    }  # fmt: skip
    assert all(probe["port"] in ports for probe in probes.values())
    partitions = int(args[args.index("--partitions") + 1])
    assert deployment["spec"]["replicas"] <= partitions, "workers beyond the partition count sit idle"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    resources = container["resources"]
    for key in ("cpu", "memory"):
        assert quantity(resources["requests"][key]) <= quantity(resources["limits"][key])
    security = pod["spec"]["securityContext"]
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    assert security["runAsNonRoot"] is True and str(security["runAsUser"]) == uid


def test_worker_and_migration_environment_is_known_to_castwatch() -> None:
    docs = manifests()
    config = {**named(docs, "ConfigMap"), **named(docs, "Secret")}
    known = settings_variables()
    pods = [named(docs, "Deployment")["castwatch-worker"], named(docs, "Job")["castwatch-migrate"]]
    for workload in pods:
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        env: dict[str, str] = {}
        for source in container["envFrom"]:
            ref = source.get("configMapRef") or source["secretRef"]
            assert ref["name"] in config, f"{workload['metadata']['name']}: no ConfigMap or Secret {ref['name']}"
            values = config[ref["name"]].get("data") or config[ref["name"]]["stringData"]
            assert set(values) <= known, f"{ref['name']}: settings.py does not read {set(values) - known}"
            env.update(values)
        settings = Settings.from_env(env)  # the values parse: protocol, mechanism, credentials, ports
        if workload["kind"] == "Deployment":
            assert settings.web_host == "0.0.0.0" and settings.kafka_security.sasl and settings.kafka_security.tls
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            ca = settings.kafka_security.ca_file
            volume = next(v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == mounts[str(ca.parent)])
            assert ca.name in config[volume["secret"]["secretName"]]["stringData"]
    (migrate,) = named(docs, "Job")["castwatch-migrate"]["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["db", "migrate"]
