"""Static checks of the container and Kubernetes files (no container engine runs here)."""

from __future__ import annotations

import json
import ssl
import urllib.error
from pathlib import Path

import jsonschema
import pytest
import yaml

from streamdet.config import load_config, load_config_text
from streamdet.detectors import DETECTORS
from streamdet.io.sinks.alerts import alert_schema

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def k8s_objects() -> dict[str, dict]:
    objects = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path.name}: incomplete"
            objects[doc["kind"]] = doc
    return objects


def test_kustomization_lists_every_manifest():
    listed = set(yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_deployment_probes_service_monitor_and_config_fit_together(tmp_path):
    objs = k8s_objects()
    assert {
        "Deployment",
        "Service",
        "ServiceMonitor",
        "ConfigMap",
        "PodDisruptionBudget",
        "ScaledObject",
        "PersistentVolumeClaim",
    } <= set(objs)
    deployment = objs["Deployment"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    service = objs["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ports
    monitor = objs["ServiceMonitor"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()

    config_map = objs["ConfigMap"]
    mounted = {v["configMap"]["name"] for v in pod["spec"]["volumes"] if "configMap" in v}
    assert config_map["metadata"]["name"] in mounted
    password = tmp_path / "metrics-password"
    password.write_text("from-the-secret\n")
    text = config_map["data"]["config.yaml"].replace(
        "/etc/streamdet-secrets/metrics-password", str(password)
    )
    cluster = load_config_text(text, "configmap", environ={})
    # Listening beyond the pod needs credentials; the secret is mounted where the config says.
    assert ports["metrics"] == cluster.metrics.port and cluster.metrics.host == "0.0.0.0"
    assert cluster.metrics.basic_auth_password.get_secret_value() == "from-the-secret"
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert "/etc/streamdet-secrets/metrics-password".startswith(mounts["secrets"])
    assert monitor["spec"]["endpoints"][0]["basicAuth"]["password"]["key"] == "metrics-password"
    # The password crosses the network only over TLS: the endpoint serves HTTPS, the probes and
    # the ServiceMonitor speak it, and the certificate is the secret mounted where the config
    # reads it.
    assert cluster.metrics.tls_certfile and cluster.metrics.tls_keyfile
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS", probe
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    tls_secret = next(
        v["secret"]["secretName"] for v in pod["spec"]["volumes"] if v["name"] == "tls"
    )
    assert endpoint["tlsConfig"]["ca"]["secret"]["name"] == tls_secret
    assert cluster.metrics.tls_certfile.startswith(mounts["tls"] + "/")
    assert cluster.metrics.tls_keyfile.startswith(mounts["tls"] + "/")
    repo = load_config(ROOT / "config.yaml", environ={})
    assert cluster.topics == repo.topics, "configmap.yaml is stale: regenerate from config.yaml"

    scaled = objs["ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == cluster.kafka.group_id
    assert trigger["metadata"]["topic"] in {t.name for t in cluster.topics}
    assert trigger["metadata"]["bootstrapServers"] == cluster.kafka.bootstrap_servers


def test_the_clusters_metrics_endpoint_guards_metrics_over_tls_and_keeps_probes_open(tmp_path):
    """The configmap's metrics section, served for real (certificates made here, bound to
    127.0.0.1): probes answer over HTTPS without credentials, /metrics needs them, and plain
    HTTP is refused, so the password is never sent in clear."""
    from streamdet.runtime.http import serve
    from tests.io.test_security import make_certificates
    from tests.runtime.test_http import get, ok, registry

    ca, _ = make_certificates(tmp_path / "certs")
    password = tmp_path / "metrics-password"
    password.write_text("from-the-secret\n")
    text = (
        k8s_objects()["ConfigMap"]["data"]["config.yaml"]
        .replace("/etc/streamdet-secrets/metrics-password", str(password))
        .replace("/etc/streamdet-tls/tls.crt", str(tmp_path / "certs" / "broker.crt"))
        .replace("/etc/streamdet-tls/tls.key", str(tmp_path / "certs" / "broker.key"))
    )
    metrics = load_config_text(text, "configmap", environ={}).metrics
    server = serve(metrics.model_copy(update={"host": "127.0.0.1", "port": 0}), registry(), ok, ok)
    try:
        base = f"127.0.0.1:{server.server_port}"
        context = ssl.create_default_context(cafile=str(ca))
        assert get(f"https://{base}/healthz", context=context).status == 200
        assert get(f"https://{base}/readyz", context=context).status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            get(f"https://{base}/metrics", context=context)
        assert refused.value.code == 401
        auth = f"{metrics.basic_auth_username}:from-the-secret"
        assert b"streamdet_demo_total" in get(f"https://{base}/metrics", auth, context).read()
        with pytest.raises(OSError):
            get(f"http://{base}/metrics", auth)
    finally:
        server.shutdown()


def test_compose_services_reference_real_files_and_each_other():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "simulator", "streamdet", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in services, f"{name} depends on unknown service {other}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared {source}"
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).exists()
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    target = scrape["scrape_configs"][0]["static_configs"][0]["targets"][0]
    assert target.split(":")[0] in services and target.endswith(":9108")
    assert "--kafka" in services["streamdet"]["command"]


def test_dockerfile_is_slim_non_root_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert all("slim" in line for line in text.splitlines() if line.startswith("FROM"))
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["streamdet"]' in text


def test_alert_schema_names_every_detector_and_accepts_a_real_alert_shape():
    schema = json.loads((ROOT / "docs" / "alert.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == alert_schema(), "docs/alert.schema.json is stale: run streamdet schema --out"
    assert schema["properties"]["detector"]["enum"] == sorted(DETECTORS)
    alert = {
        "alert_id": "0" * 32,
        "series": "s",
        "topic": "t",
        "partition": 0,
        "detector": "adversarial_vae",
        "model_version": None,
        "store_version": "v000003",
        "score": 1.5,
        "rule": "spot",
        "threshold": 0.2,
        "severity": 7.5,
        "window_start": "2026-11-22T10:00:00.000Z",
        "window_end": "2026-11-22T10:00:00.000Z",
        "window_start_offset": 4,
        "window_end_offset": 4,
        "feature_scores": [0.1],
        "detected_at": "2026-11-22T10:00:01.000Z",
        "explanation": None,
    }
    jsonschema.validate(alert, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**alert, "detector": "isolation_forest"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**alert, "rule": "sometimes"}, schema)
