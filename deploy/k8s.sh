#!/usr/bin/env bash
# make deploy DEPLOY_TARGET=k8s: validation gate, image build and push, one apply with the new image, rollout wait,
# smoke test through the Service, and an automatic rollback when the rollout or the smoke test fails. The rollback
# restores the image and the model versions that were active before (recorded on the Deployment as agserve.io/models,
# re-activated in the database with agserve models promote, so this must run with the fleet's AGSERVE_DATABASE_URL).
# Needs docker, kubectl and REGISTRY. The models are read from the PersistentVolumeClaim agserve-models: the
# repository this runs against (AGSERVE_MODEL_REPOSITORY) must be the one that volume holds, and the smoke test
# checks that the pods serve exactly the versions the gate validated. The Secret agserve-secrets is the operator's
# (deploy/k8s/examples/secret.yaml shows its keys): it is never applied from here, only checked to exist and to hold
# a real AGSERVE_KEY_PEPPER (and AGSERVE_JWT_SECRET, if set), as production start-up would check them.
#   REGISTRY             where the image is pushed, e.g. registry.example.com/team (required)
#   NAMESPACE            Kubernetes namespace (default: default)
#   AGSERVE_MODELS       models to validate, as the server reads it (default: every model with an active version)
#   VALIDATION_DATA_DIR  <name>.csv here is the gate's data for that model (default: the version's holdout.csv)
#   VALIDATE_ARGS        extra gate options, e.g. "--min accuracy=0.9 --max-latency-ms 50"
#   ROLLOUT_TIMEOUT      how long the rollout may take (default: 10m)
#   SMOKE_URL            the Service's address as pods see it (default: http://agserve)
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:?usage: deploy/k8s.sh deploy|undeploy|status}
BIN=${BIN:-.venv/bin}
NAMESPACE=${NAMESPACE:-default}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-10m}
SMOKE_URL=${SMOKE_URL:-http://agserve}
step() { echo "deploy: $*"; }
fail() { echo "deploy: FAILED: $*" >&2; exit 1; }
k() { kubectl --namespace "$NAMESPACE" "$@"; }

# The active version of every model to deploy, "name version" per line.
active_models() {
  "$BIN/agserve" models list --json | "$BIN/python" -c '
import json, os, sys
wanted = [n.strip() for n in os.environ.get("AGSERVE_MODELS", "").split(",") if n.strip()]
active = {m["name"]: m["version"] for m in json.load(sys.stdin) if m["active"]}
missing = [n for n in wanted if n not in active]
if missing:
    sys.exit("no active version of " + ", ".join(missing))
for name in wanted or sorted(active):
    print(name, active[name])'
}

# Run in a pod of the new rollout: /health/ready through the Service must be ready, and each validated version must
# be the one served (the public V2 readiness of a model version: production's /health names no models).
SMOKE_CHECK='
import json, sys, urllib.error, urllib.request
url, expected = sys.argv[1], dict(pair.split("=") for pair in sys.argv[2:])
def status(path):
    try:
        return urllib.request.urlopen(url + path, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code
ready = status("/health/ready")
wrong = {name: version for name, version in expected.items()
         if status(f"/v2/models/{name}/versions/{version}/ready") != 200}
print("smoke test:", "ready" if ready == 200 else f"not ready ({ready})", "versions not served:", wrong or "none")
sys.exit(f"not serving the validated versions: {wrong}" if wrong or ready != 200 else 0)'

# Reads `kubectl get secret -o json` on stdin: the operator's Secret must hold values production accepts.
SECRET_CHECK='
import base64, json, sys
from app.auth.secret_strength import weakness
data = {k: base64.b64decode(v).decode() for k, v in (json.load(sys.stdin).get("data") or {}).items()}
if not data.get("AGSERVE_KEY_PEPPER"):
    sys.exit("the Secret agserve-secrets has no AGSERVE_KEY_PEPPER")
for name in ("AGSERVE_KEY_PEPPER", "AGSERVE_JWT_SECRET"):
    problem = weakness(data[name]) if data.get(name) else None
    if problem:
        sys.exit(f"{name} in the Secret agserve-secrets {problem}")'

# Re-activate "name=version ..." in the database where another version is active now; every pod follows.
restore_models() {
  local pair name version
  for pair in $1; do
    name=${pair%%=*}; version=${pair#*=}
    [ "$("$BIN/agserve" models list --json | "$BIN/python" -c "import json, sys
print(next((m['version'] for m in json.load(sys.stdin) if m['name'] == sys.argv[1] and m['active']), ''))" "$name")" \
      = "$version" ] && continue
    step "restoring model $name to version $version"
    "$BIN/agserve" models promote "$name" "$version" --force || return 1
  done
}

rollback() {  # $1: what failed
  if [ -n "$previous" ]; then
    step "$1 failed: rolling back to revision $previous"
    k rollout undo deployment/agserve --to-revision="$previous" || fail "$1, and the rollback failed too"
    k rollout status deployment/agserve --timeout="$ROLLOUT_TIMEOUT" || fail "$1, and the rollback did not become ready"
    restore_models "$previous_models" || fail "$1, and restoring the model versions ($previous_models) failed"
    fail "$1 of $image (rolled back to revision $previous${previous_models:+ and models $previous_models})"
  fi
  fail "$1 of $image (first deploy: nothing to roll back to)"
}

case "$action" in
  deploy)
    : "${REGISTRY:?set REGISTRY, e.g. registry.example.com/team}"
    for tool in docker kubectl; do command -v "$tool" >/dev/null || fail "$tool is needed and not on PATH"; done
    ! grep -lq '^kind: Secret' deploy/k8s/*.yaml || fail "deploy/k8s/ holds a Secret: it would overwrite the operator's"
    step "checking the Secret agserve-secrets (created by the operator, never applied from here)"
    secret=$(k get secret agserve-secrets -o json) || fail "no Secret agserve-secrets in namespace $NAMESPACE: create it \
first (see deploy/k8s/examples/secret.yaml)"
    "$BIN/python" -c "$SECRET_CHECK" <<< "$secret" || fail "the Secret agserve-secrets is not fit for production"
    step "validation gate: manifests against the Kubernetes schemas"
    "$BIN/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml || fail "a manifest is invalid"
    models=$(active_models) || fail "the models to deploy are not all active"
    [ -n "$models" ] || fail "no model has an active version"
    commit=$(git rev-parse --short=12 HEAD) || fail "not a git checkout: the image tag needs the commit"
    tag=$commit
    expected=()
    while read -r name version; do
      step "validation gate: model $name version $version"
      data=()
      [ -n "${VALIDATION_DATA_DIR:-}" ] && [ -f "$VALIDATION_DATA_DIR/$name.csv" ] \
        && data=(--data "$VALIDATION_DATA_DIR/$name.csv")
      # shellcheck disable=SC2086  # VALIDATE_ARGS is a list of options
      "$BIN/agserve" models validate "$name" "$version" "${data[@]}" ${VALIDATE_ARGS:-} \
        || fail "model $name version $version did not pass validation"
      tag="$tag-$name-$version"
      expected+=("$name=$version")
    done <<< "$models"
    [ ${#tag} -le 128 ] || tag="$commit-models-$(echo "$tag" | sha256sum | cut -c1-12)"
    image="$REGISTRY/agserve:$tag"
    step "building $image"; docker build -t "$image" . || fail "image build"
    step "pushing $image"; docker push "$image" || fail "image push"

    # One apply with the new image, so the rollout has a single new revision and an undo returns to the old one.
    rendered=$(mktemp -d); trap 'rm -rf "$rendered"' EXIT
    cp deploy/k8s/*.yaml "$rendered/"
    sed -i "s|image: agserve:latest|image: $image|" "$rendered/deployment.yaml"
    grep -q "image: $image" "$rendered/deployment.yaml" || fail "deployment.yaml has no 'image: agserve:latest' to set"
    sed -i "s|agserve.io/models: \"\"|agserve.io/models: \"${expected[*]}\"|" "$rendered/deployment.yaml"
    grep -q "agserve.io/models: \"${expected[*]}\"" "$rendered/deployment.yaml" \
      || fail "deployment.yaml has no 'agserve.io/models: \"\"' annotation to set"
    running=$(k get deployment/agserve -o 'jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}|{.metadata.annotations.agserve\.io/models}' 2>/dev/null || true)
    previous=${running%%|*}
    previous_models=${running#"$previous"}; previous_models=${previous_models#|}
    step "applying deploy/k8s/ with $image${previous:+ (the running revision is $previous)}"
    k apply -f "$rendered/" || fail "kubectl apply"
    step "waiting for the rollout (up to $ROLLOUT_TIMEOUT)"
    k rollout status deployment/agserve --timeout="$ROLLOUT_TIMEOUT" || rollback "rollout"
    step "smoke test: $SMOKE_URL/health/ready from a new pod, expecting ${expected[*]}"
    k exec deployment/agserve -- python -c "$SMOKE_CHECK" "$SMOKE_URL" "${expected[@]}" || rollback "smoke test"
    step "deployed $image"
    ;;
  undeploy) k delete -f deploy/k8s/ --ignore-not-found ;;
  status) k get deployment/agserve -o wide && k get pods -l app.kubernetes.io/name=agserve -o wide ;;
  *) fail "unknown action $action" ;;
esac
