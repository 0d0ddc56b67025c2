"""The deployment files pass their own tools' checks (nginx -t from Debian's nginx, the Kubernetes schemas) and say
what ops rely on: probes on the right endpoints, graceful shutdown that fits, non-root, read-only, pinned, healthy."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from app.config import load_settings
from tests.receivers import self_signed_certificate
from tests.servers import ROOT

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37"


def manifests() -> dict[tuple[str, str], dict]:
    documents = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            documents[(document["kind"], document["metadata"]["name"])] = document
    return documents


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    import kubernetes_validate

    documents = manifests()
    assert {kind for kind, _ in documents} >= {"Deployment", "Service", "HorizontalPodAutoscaler",
                                               "PersistentVolumeClaim", "ConfigMap", "Secret"}
    for document in documents.values():
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(documents[("Deployment", "agserve")])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}  # a typo is caught
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_deployment_probes_shuts_down_gracefully_and_runs_locked_down():
    documents = manifests()
    secret = documents[("Secret", "agserve-secrets")]["stringData"]
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
    assert (("ConfigMap", sources["configMapRef"]) in documents) and (("Secret", sources["secretRef"]) in documents)
    hpa = documents[("HorizontalPodAutoscaler", "agserve")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "agserve" and hpa["minReplicas"] >= 2
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
    assert set(compose) == {"api", "nginx", "redis", "postgres"}
    for name, service in compose.items():
        assert service["healthcheck"]["test"] and service["restart"] == "unless-stopped", name
    assert "./models:/srv/agserve/models:ro" in compose["api"]["volumes"]
    assert compose["api"]["environment"]["AGSERVE_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD")
    assert "--requirepass" in compose["redis"]["command"]
    assert compose["api"]["environment"]["AGSERVE_DATABASE_URL"].startswith("postgresql://agserve:${POSTGRES_PASSWORD")
    assert compose["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "agserve-postgres:/var/lib/postgresql/data" in compose["postgres"]["volumes"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in compose["nginx"]["volumes"]
    assert "volatile-lru" in compose["redis"]["command"]  # cache entries and rate windows expire
