#!/usr/bin/env bash
# Offline checks of the deployment files, run by the test suite (CTest `deploy_checks`):
#   hadolint on the Dockerfile (warning level; .hadolint.yaml says what is ignored and why),
#   helm lint --strict and helm template of helm/quantserve with its default values and with
#   ci/full-values.yaml, each rendering validated by kubernetes-validate --strict against
#   Kubernetes 1.30, the CRDs it cannot check (ScaledObject, ServiceMonitor) checked field by
#   field here, and values.schema.json shown to reject bad values; the Prometheus rules checked
#   and unit-tested with promtool (deploy/prometheus). The dashboard's and the rules' metric
#   names are checked against a running server by server_test
#   (DashboardAndAlertRulesNameExportedMetrics).
# Tools come from requirements-deploy.txt in a cached venv (scripts/lib.sh ensure_deploy_tools).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set -euo pipefail
venv="$(ensure_deploy_tools)"
PATH="$venv/bin:$PATH"
chart="$QS_ROOT/helm/quantserve"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

promtool="$(ensure_promtool)"
log "promtool check rules / test rules (deploy/prometheus)"
"$promtool" check rules "$QS_ROOT/deploy/prometheus/quantserve-rules.yaml" >/dev/null
(cd "$QS_ROOT/deploy/prometheus" && "$promtool" test rules quantserve-rules_test.yaml >/dev/null)
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["panels"] and all("targets" in p or p["type"]=="row" for p in d["panels"])' \
  "$QS_ROOT/deploy/grafana/quantserve-dashboard.json"

log "hadolint $(hadolint --version | head -1)"
hadolint --config "$QS_ROOT/.hadolint.yaml" "$QS_ROOT/Dockerfile"

for values in default full; do
  args=()
  [ "$values" = full ] && args=(-f "$chart/ci/full-values.yaml")
  log "helm lint --strict ($values values)"
  helm lint --strict "$chart" "${args[@]}" >/dev/null
  helm template qs "$chart" --namespace serving "${args[@]}" >"$tmp/$values.yaml"
  log "kubernetes-validate --strict -k 1.30.0 ($values values)"
  kubernetes-validate --strict -k 1.30.0 --quiet "$tmp/$values.yaml"
done

log "CRD fields and the startup config (full values)"
python3 - "$tmp/full.yaml" "$tmp/default.yaml" <<'PY'
import json, sys, yaml
def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]
full = {d["kind"]: d for d in docs(sys.argv[1])}
so = full["ScaledObject"]["spec"]
assert so["scaleTargetRef"]["name"] == full["Deployment"]["metadata"]["name"], so
trig = so["triggers"][0]
assert trig["type"] == "prometheus", trig
meta = trig["metadata"]
assert meta["serverAddress"].startswith("http") and isinstance(meta["threshold"], str), meta
assert "quantserve_inference_requests_waiting" in meta["query"], meta
assert so["minReplicaCount"] <= so["maxReplicaCount"]
sm = full["ServiceMonitor"]["spec"]
ports = {p["name"] for p in full["Service"]["spec"]["ports"]}
assert all(e["port"] in ports for e in sm["endpoints"]), (sm, ports)
assert sm["selector"]["matchLabels"].items() <= full["Service"]["spec"]["selector"].items()
assert "replicas" not in full["Deployment"]["spec"], "KEDA owns the replica count"
pod = full["Deployment"]["spec"]["template"]["spec"]
c = pod["containers"][0]
assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
# TLS on the gRPC port: the probes (which cannot speak TLS) use the plaintext health port.
health_port = int([a for a in c["args"] if a.startswith("--health_listen=")][0].rsplit(":", 1)[1])
assert {"name": "health", "containerPort": health_port} in c["ports"], c["ports"]
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    assert c[probe]["grpc"]["port"] == health_port, (probe, c[probe])
assert c["readinessProbe"]["grpc"]["service"] == "llama-nf4"
sc = c["securityContext"]
assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
assert sc["capabilities"]["drop"] == ["ALL"]
assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
grace = pod["terminationGracePeriodSeconds"]
drain = int([a for a in c["args"] if a.startswith("--drain_timeout_seconds=")][0].split("=")[1])
assert grace > drain + c["lifecycle"]["preStop"]["sleep"]["seconds"], (grace, drain)
startup = json.loads(full["ConfigMap"]["data"]["startup.json"])
assert [m["name"] for m in startup["models"]] == ["llama-bf16", "llama-nf4"], startup
assert startup["routes"][0]["variants"][1] == {"model": "llama-nf4", "weight": 1}, startup
# Token Secrets: each flag names a file inside a directory-mounted Secret volume (rotation
# reaches it; a subPath mount would not).
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
volumes = {v["name"]: v for v in pod["volumes"]}
for flag, secret in (("--auth_token_file=", "quantserve-admin-tokens"),
                     ("--inference_token_file=", "quantserve-inference-tokens")):
    path = [a for a in c["args"] if a.startswith(flag)][0][len(flag):]
    vol = volumes[mounts[path.rsplit("/", 1)[0]]]
    assert vol["secret"]["secretName"] == secret and not any("subPath" in m for m in c["volumeMounts"]), vol
for flag in ("--tls_cert_file=", "--tls_key_file=", "--tls_client_ca_file="):
    path = [a for a in c["args"] if a.startswith(flag)][0][len(flag):]
    assert volumes[mounts[path.rsplit("/", 1)[0]]]["secret"]["secretName"] == "quantserve-tls", flag
default = {d["kind"]: d for d in docs(sys.argv[2])}
dc = default["Deployment"]["spec"]["template"]["spec"]["containers"][0]
assert not any("token_file" in a or "tls_" in a or "health_listen" in a for a in dc["args"]), dc["args"]
assert dc["readinessProbe"]["grpc"]["port"] == dc["ports"][0]["containerPort"], dc["readinessProbe"]
assert set(default) == {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}, set(default)
print("crd and config checks passed")
PY

log "values.schema.json rejects bad values"
for bad in "replicaCount=-1" "bogus=1" "modelStorage.type=nfs" "server.extraArgs[0]=max_batch_size" \
           "routes[0].name=bad name" "tls.mutual=maybe" "server.healthPort=0"; do
  if helm template qs "$chart" --set "$bad" >/dev/null 2>"$tmp/err"; then
    log "values.schema.json accepted --set $bad"
    exit 1
  fi
done
log "deployment checks passed"
