#!/usr/bin/env bash
# Every static check of deploy/ that can run on this machine, offline, in a few seconds:
#   deploy/check.sh            # ctest runs it as deploy_static_checks
# A check whose tool is absent is SKIPPED (and listed); any failing check fails the script.
# Tools: python3 + PyYAML (deploy/check_files.py), systemd-analyze (Debian: systemd),
# promtool (Debian: prometheus), docker-compose (Debian: docker-compose) or `docker compose`,
# kubectl (offline `kubectl kustomize`), hadolint; and from npm, in $QATD_DEPLOY_NODE_MODULES
# (default /opt/qatd-deploy-check/node_modules):
#   npm install --prefix /opt/qatd-deploy-check kubernetes-models \
#       @kubernetes-models/prometheus-operator js-yaml dockerfile-utils
set -uo pipefail
DEPLOY=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$DEPLOY")
NODE_MODULES=${QATD_DEPLOY_NODE_MODULES:-/opt/qatd-deploy-check/node_modules}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0 skipped=0
failed_names=() skipped_names=()

# run NAME CMD...: runs a check, prints its output indented.
run() {
  local name=$1; shift
  if "$@" > "$TMP/out" 2>&1; then
    passed=$((passed + 1)); echo "PASS  $name"
    grep -v '^ok ' "$TMP/out" | sed 's/^/      /' | tail -3
  else
    failed=$((failed + 1)); failed_names+=("$name"); echo "FAIL  $name"
    grep -v '^ok ' "$TMP/out" | sed 's/^/      /' | tail -40
  fi
}
skip() {
  skipped=$((skipped + 1)); skipped_names+=("$1"); echo "SKIP  $1: $2"
}
have() { command -v "$1" > /dev/null 2>&1; }

# 1. Cross-file checks (flags exist, labels/ports/volumes/secrets resolve, Dockerfile rules).
PY=""
for p in /usr/bin/python3 python3; do
  if have "$p" && "$p" -c 'import yaml' 2> /dev/null; then PY=$p; break; fi
done
if [[ -n $PY ]]; then
  run "deploy/check_files.py (flags, Dockerfiles, compose, systemd, k8s cross-checks)" "$PY" "$DEPLOY/check_files.py"
else
  skip "deploy/check_files.py" "python3 with PyYAML (Debian: python3-yaml) not found"
fi

# 2. systemd-analyze verify, in a scratch root that has the unit, systemd's own units and a
#    stand-in /usr/local/bin/qatd (verify checks that ExecStart is executable). Any message fails.
verify_unit() {
  local r=$TMP/root
  mkdir -p "$r/etc/systemd/system" "$r/usr/local/bin" "$r/usr/lib/systemd"
  cp -r /usr/lib/systemd/system "$r/usr/lib/systemd/"
  cp "$DEPLOY/systemd/qatd.service" "$r/etc/systemd/system/"
  printf '#!/bin/sh\n' > "$r/usr/local/bin/qatd" && chmod 755 "$r/usr/local/bin/qatd"
  SYSTEMD_LOG_COLOR=0 systemd-analyze verify --root="$r" qatd.service > "$TMP/verify" 2>&1
  local rc=$?
  cat "$TMP/verify"
  [[ $rc -eq 0 && ! -s "$TMP/verify" ]]
}
if have systemd-analyze && [[ -d /usr/lib/systemd/system ]]; then
  run "systemd-analyze verify deploy/systemd/qatd.service" verify_unit
else
  skip "systemd-analyze verify" "systemd-analyze not found (Debian: systemd)"
fi

# 3. promtool: the compose Prometheus config, with the rules path pointed at the repository's file.
check_prom() {
  sed "s|/etc/prometheus/rules/|$DEPLOY/prometheus/rules/|" "$DEPLOY/docker/prometheus.compose.yml" > "$TMP/prometheus.yml"
  if [[ -f "$DEPLOY/prometheus/rules/qatd.rules.yml" ]]; then
    promtool check config "$TMP/prometheus.yml"   # also checks the rule file
  else
    echo "(deploy/prometheus/rules/qatd.rules.yml absent: syntax only)"
    promtool check config --syntax-only "$TMP/prometheus.yml"
  fi
}
if have promtool; then
  run "promtool check config deploy/docker/prometheus.compose.yml" check_prom
else
  skip "promtool check config" "promtool not found (Debian: prometheus)"
fi

# 4. Compose file: the schema check of `config`.
if have docker-compose; then
  run "docker-compose config -q deploy/compose.yaml" docker-compose -f "$DEPLOY/compose.yaml" config -q
elif have docker && docker compose version > /dev/null 2>&1; then
  run "docker compose config -q deploy/compose.yaml" docker compose -f "$DEPLOY/compose.yaml" config -q
else
  skip "compose config" "neither docker-compose (Debian: docker-compose) nor the docker compose plugin found"
fi

# 5. Kubernetes: kustomize renders offline; schemas from npm kubernetes-models; a client dry
#    run needs an API server (kubectl reads the schemas from it), so it runs only with one.
if have kubectl; then
  render() {
    kubectl kustomize "$DEPLOY/k8s" > "$TMP/rendered.yaml" || return 1
    echo "rendered: $(grep '^kind:' "$TMP/rendered.yaml" | cut -d' ' -f2 | tr '\n' ' ')"
  }
  run "kubectl kustomize deploy/k8s (offline render)" render
  if timeout 5 kubectl version > /dev/null 2>&1; then
    run "kubectl apply --dry-run=client -k deploy/k8s" kubectl apply --dry-run=client -k "$DEPLOY/k8s"
  else
    skip "kubectl apply --dry-run=client" "no Kubernetes API server reachable (kubectl needs one for its schemas)"
  fi
else
  skip "kubectl kustomize / apply --dry-run=client" "kubectl not found"
fi
if have node && [[ -d "$NODE_MODULES/kubernetes-models" && -d "$NODE_MODULES/js-yaml" ]]; then
  run "k8s OpenAPI schemas (npm kubernetes-models)" node "$DEPLOY/k8s/check_schemas.mjs" "$NODE_MODULES" \
    "$DEPLOY"/k8s/{namespace,service,statefulset,servicemonitor,secrets.example}.yaml
else
  skip "k8s OpenAPI schemas" "node or npm kubernetes-models not found in $NODE_MODULES"
fi

# 6. Dockerfile linters.
if have hadolint; then
  run "hadolint deploy/docker/Dockerfile*" hadolint "$DEPLOY/docker/Dockerfile" "$DEPLOY/docker/Dockerfile.cuda"
else
  skip "hadolint" "hadolint not found (neither Debian nor npm packages it)"
fi
if [[ -x "$NODE_MODULES/.bin/dockerfile-utils" ]] && have node; then
  lint_dockerfiles() {
    "$NODE_MODULES/.bin/dockerfile-utils" lint "$DEPLOY/docker/Dockerfile" &&
      "$NODE_MODULES/.bin/dockerfile-utils" lint "$DEPLOY/docker/Dockerfile.cuda"
  }
  run "dockerfile-utils lint deploy/docker/Dockerfile*" lint_dockerfiles
else
  skip "dockerfile-utils lint" "npm dockerfile-utils not found in $NODE_MODULES"
fi

echo "deploy checks: $passed passed, $failed failed, $skipped skipped"
((skipped)) && printf '  skipped: %s\n' "${skipped_names[@]}"
((failed)) && printf '  failed: %s\n' "${failed_names[@]}"
[[ $failed -eq 0 ]]
