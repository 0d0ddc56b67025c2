#!/usr/bin/env bash
# make deploy DEPLOY_TARGET=k8s: validation gate, image build and push, one apply with the new image, rollout wait,
# smoke test through the Service, and an automatic rollback when the rollout or the smoke test fails. The rollback
# restores the image and the model versions that were active before (recorded on the Deployment as agserve.io/models,
# re-activated in the database with agserve models promote, so this must run with the fleet's AGSERVE_DATABASE_URL).
# Needs docker, kubectl and REGISTRY. The models are read from the PersistentVolumeClaim agserve-models: the
# repository this runs against (AGSERVE_MODEL_REPOSITORY) must be the one that volume holds, and the smoke test
# checks that the pods serve exactly the versions the gate validated.
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

# Run in a pod of the new rollout: /health/ready through the Service must be ready with the validated versions.
SMOKE_CHECK='
import json, sys, urllib.request
url, expected = sys.argv[1], dict(pair.split("=") for pair in sys.argv[2:])
body = json.load(urllib.request.urlopen(url + "/health/ready", timeout=10))
served = {name: slot["version"] for name, slot in body["models"].items()}
wrong = {name: served.get(name) for name, version in expected.items() if served.get(name) != version}
print("smoke test:", body["status"], served)
sys.exit(f"not serving the validated versions: {wrong}" if wrong or body["status"] != "ready" else 0)'

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
