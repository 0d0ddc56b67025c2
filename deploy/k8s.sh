#!/usr/bin/env bash
# make deploy DEPLOY_TARGET=k8s: validation gate, image build and push, apply, rollout wait, smoke test, and an
# automatic rollback when the rollout or the smoke test fails. Needs docker, kubectl and REGISTRY; untested here
# (this machine has neither a Docker engine nor a cluster): the manifests it applies are validated by make test.
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:?usage: deploy/k8s.sh deploy|undeploy|status}
BIN=${BIN:-.venv/bin}
NAMESPACE=${NAMESPACE:-default}
MODEL=${MODEL:-$(ls models | grep -v README.md | head -1)}
step() { echo "deploy: $*"; }
fail() { echo "deploy: FAILED: $*" >&2; exit 1; }
k() { kubectl --namespace "$NAMESPACE" "$@"; }

case "$action" in
  deploy)
    : "${REGISTRY:?set REGISTRY, e.g. registry.example.com/team}"
    command -v docker >/dev/null && command -v kubectl >/dev/null || fail "docker and kubectl are needed"
    step "validation gate: manifests against the Kubernetes schemas"
    "$BIN/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml || fail "a manifest is invalid"
    version=$("$BIN/agserve" models list --json | "$BIN/python" -c \
      "import json,sys; print(next((m['version'] for m in json.load(sys.stdin) if m['name'] == '$MODEL' and m['active']), ''))")
    [ -n "$version" ] || fail "model $MODEL has no active version"
    step "validation gate: model $MODEL version $version"
    "$BIN/agserve" models validate "$MODEL" "$version" || fail "model $MODEL $version did not pass validation"
    tag="$(git rev-parse --short=12 HEAD)-$MODEL-$version"
    image="$REGISTRY/agserve:$tag"
    step "building $image"; docker build -t "$image" . || fail "image build"
    step "pushing $image"; docker push "$image" || fail "image push"
    step "applying deploy/k8s/"; k apply -f deploy/k8s/ || fail "kubectl apply"
    step "setting the image"; k set image deployment/agserve agserve="$image" || fail "kubectl set image"
    if ! k rollout status deployment/agserve --timeout=10m; then
      step "rollout failed: rolling back"; k rollout undo deployment/agserve; fail "rollout of $image"
    fi
    step "smoke test: /health/ready through the service"
    if ! k run "agserve-smoke-$RANDOM" --rm -i --restart=Never --image=curlimages/curl:8.10.1 -- \
        curl -sf http://agserve/health/ready; then
      step "smoke test failed: rolling back"; k rollout undo deployment/agserve; fail "smoke test of $image"
    fi
    step "deployed $image"
    ;;
  undeploy) k delete -f deploy/k8s/ --ignore-not-found ;;
  status) k get deployment/agserve pods -l app.kubernetes.io/name=agserve -o wide ;;
  *) fail "unknown action $action" ;;
esac
