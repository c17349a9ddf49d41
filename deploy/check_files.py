#!/usr/bin/env python3
"""Static checks of deploy/ that need only Python 3 and PyYAML (run by deploy/check.sh).

- every qatd flag that a Dockerfile, compose.yaml, the systemd unit or the k8s manifests pass
  exists in server/daemon_options.cc, and every `qat health` flag in client/;
- Dockerfiles: multi-stage, final stage non-root USER, VOLUME, HEALTHCHECK (qat health),
  apt hygiene, every COPY source exists in the repository;
- compose.yaml: the three services, the bind-mounted files exist, the rules path is wired;
- k8s: required fields per kind, selectors match labels, ports and volumes resolve, GPU
  request, Secrets mounted, grace period longer than --cancel-grace-seconds.
Prints one line per check and exits 1 when any fails.
"""
import glob
import os
import re
import shlex
import sys

import yaml

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


# ---- the flags the binaries really have ------------------------------------------------
QATD_FLAGS = set(re.findall(r'add_(?:option|flag)\("(--[a-z0-9-]+)"', read("server/daemon_options.cc")))
QAT_FLAGS = set()
for name in ("client/connection.cc", "client/health_command.cc"):
    QAT_FLAGS |= set(re.findall(r'add_(?:option|flag)\("(--[a-z0-9-]+)"', read(name)))
check(len(QATD_FLAGS) > 10 and "--data-dir" in QATD_FLAGS, f"qatd flags read from server/daemon_options.cc ({len(QATD_FLAGS)})")


def check_qatd_args(args, where):
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    unknown = [f for f in flags if f not in QATD_FLAGS]
    check(not unknown, f"{where}: qatd flags exist {unknown if unknown else ''}".rstrip())
    check("--data-dir" in flags, f"{where}: passes --data-dir")
    return dict(a.split("=", 1) if "=" in a else (a, None) for a in args if a.startswith("--"))


def check_health_command(argv, where):
    check(argv[:2] == ["qat", "health"], f"{where}: health check runs `qat health`")
    unknown = [a.split("=", 1)[0] for a in argv[2:] if a.startswith("--") and a.split("=", 1)[0] not in QAT_FLAGS]
    check(not unknown, f"{where}: qat health flags exist {unknown if unknown else ''}".rstrip())


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
        if a == flag and i + 1 < len(args):
            return args[i + 1]
    return None


# ---- Dockerfiles -----------------------------------------------------------------------
def dockerfile_instructions(text):
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def check_dockerfile(rel):
    ins = dockerfile_instructions(read(rel))
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    check(len(froms) >= 2, f"{rel}: multi-stage ({len(froms)} stages)")
    final = ins[froms[-1]:]
    words = [w for w, _ in final]
    users = [r for w, r in final if w == "USER"]
    check(bool(users) and users[-1].split(":")[0] not in ("root", "0"), f"{rel}: final stage runs as a non-root USER")
    check(words.index("USER") < words.index("ENTRYPOINT") if "USER" in words and "ENTRYPOINT" in words else False,
          f"{rel}: USER comes before ENTRYPOINT")
    volumes = [r for w, r in final if w == "VOLUME"]
    check(any("/var/lib/qatd" in v for v in volumes), f"{rel}: the data dir /var/lib/qatd is a VOLUME")
    health = [r for w, r in final if w == "HEALTHCHECK"]
    check(len(health) == 1, f"{rel}: one HEALTHCHECK")
    if health:
        cmd = health[0].split(" CMD ", 1)[1] if " CMD " in health[0] else ""
        try:
            argv = yaml.safe_load(cmd)
        except yaml.YAMLError:
            argv = None
        check(isinstance(argv, list), f"{rel}: HEALTHCHECK CMD is an exec-form list")
        if isinstance(argv, list):
            check_health_command(argv, rel)
    entry = [r for w, r in final if w == "ENTRYPOINT"]
    cmd = [r for w, r in final if w == "CMD"]
    check(bool(entry) and yaml.safe_load(entry[-1]) == ["qatd"], f"{rel}: ENTRYPOINT is qatd")
    if cmd:
        args = yaml.safe_load(cmd[-1])
        parsed = check_qatd_args(args, f"{rel} CMD")
        check(flag_value(args, "--data-dir") == "/var/lib/qatd", f"{rel}: CMD keeps the data dir on the volume")
    check(any(w == "COPY" and "--from=" in r for w, r in final), f"{rel}: runtime stage copies the build's output")
    for w, r in ins:
        if w == "RUN" and "apt-get install" in r:
            check("--no-install-recommends" in r and "rm -rf /var/lib/apt/lists" in r,
                  f"{rel}: apt-get install with --no-install-recommends and cleaned lists")
        if w == "ADD":
            check(False, f"{rel}: uses COPY, not ADD ({r})")
        if w == "COPY" and "--from=" not in r:
            for src in shlex.split(r)[:-1]:
                if not src.startswith("--"):
                    check(os.path.exists(os.path.join(ROOT, src)), f"{rel}: COPY source {src} exists")


check_dockerfile("deploy/docker/Dockerfile")
check_dockerfile("deploy/docker/Dockerfile.cuda")

# ---- compose ---------------------------------------------------------------------------
compose = yaml.safe_load(read("deploy/compose.yaml"))
services = compose.get("services", {})
check(set(services) >= {"qatd", "prometheus", "grafana"}, "compose.yaml: services qatd, prometheus, grafana")
qatd = services.get("qatd", {})
check_qatd_args(qatd.get("command", []), "compose.yaml qatd command")
check(any(str(v).startswith("qatd-data:/var/lib/qatd") for v in qatd.get("volumes", [])),
      "compose.yaml: qatd's data dir is the named volume qatd-data")
check(str(qatd.get("stop_grace_period", "")) not in ("", "10s"), "compose.yaml: qatd has a long stop_grace_period")
mounts = [str(v).split(":")[0] for s in services.values() for v in s.get("volumes", [])]
for m in mounts:
    if m.startswith("./") and m != "./prometheus/rules":  # the rules may not be written yet
        check(os.path.exists(os.path.join(DEPLOY, m)), f"compose.yaml: bind-mounted {m} exists")
check("./prometheus/rules" in mounts, "compose.yaml: mounts deploy/prometheus/rules into Prometheus")
check("./grafana/provisioning/dashboards" in mounts and "./grafana" in mounts,
      "compose.yaml: mounts the provisioned dashboards of deploy/grafana")
prom = yaml.safe_load(read("deploy/docker/prometheus.compose.yml"))
check("/etc/prometheus/rules/qatd.rules.yml" in prom.get("rule_files", []),
      "prometheus.compose.yml: loads /etc/prometheus/rules/qatd.rules.yml")
check(prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["qatd:9464"],
      "prometheus.compose.yml: scrapes qatd:9464")
grafana_ds = yaml.safe_load(read("deploy/docker/grafana-datasource.yaml"))
uid = grafana_ds["datasources"][0]["uid"]
for name in sorted(glob.glob(os.path.join(DEPLOY, "grafana", "*.json"))):
    with open(name, encoding="utf-8") as f:
        text = f.read()
    # Every Prometheus data source a dashboard names must be the provisioned one.
    uids = set(re.findall(r'"type":\s*"prometheus",\s*"uid":\s*"([^"$]+)"', text))
    uids |= set(re.findall(r'"uid":\s*"([^"$]+)",\s*"type":\s*"prometheus"', text))
    check(uids <= {uid}, f"grafana-datasource.yaml: uid {uid} is the data source of {os.path.basename(name)} {sorted(uids)}")
if not os.path.exists(os.path.join(DEPLOY, "prometheus/rules/qatd.rules.yml")):
    print("note deploy/prometheus/rules/qatd.rules.yml does not exist yet: Prometheus starts without rules")

# ---- systemd ---------------------------------------------------------------------------
unit = read("deploy/systemd/qatd.service")
keys = {}
for line in re.sub(r"\\\n", " ", unit).splitlines():
    if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
        k, v = line.split("=", 1)
        keys.setdefault(k.strip(), []).append(v.strip())
exec_start = shlex.split(keys["ExecStart"][0])
check(exec_start[0] == "/usr/local/bin/qatd", "qatd.service: ExecStart runs /usr/local/bin/qatd")
check_qatd_args(exec_start[1:], "qatd.service ExecStart")
for k, v in {"User": "qatd", "StateDirectory": "qatd", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
             "Restart": "on-failure", "KillMode": "mixed"}.items():
    check(keys.get(k, [None])[-1] == v, f"qatd.service: {k}={v}")
grace = float(flag_value(exec_start, "--cancel-grace-seconds") or 10)
stop = int(keys.get("TimeoutStopSec", ["0"])[-1].rstrip("s"))
check(stop > grace + 5, f"qatd.service: TimeoutStopSec {stop} s > --cancel-grace-seconds {grace:g} s + 5 s of RPC drain")
check(flag_value(exec_start, "--data-dir") == "/var/lib/qatd", "qatd.service: --data-dir is the StateDirectory")

# ---- k8s -------------------------------------------------------------------------------
k8s_dir = os.path.join(DEPLOY, "k8s")
kustomization = yaml.safe_load(read("deploy/k8s/kustomization.yaml"))
docs = []
for res in kustomization["resources"]:
    check(os.path.exists(os.path.join(k8s_dir, res)), f"k8s/kustomization.yaml: resource {res} exists")
    with open(os.path.join(k8s_dir, res), encoding="utf-8") as f:
        docs += [d for d in yaml.safe_load_all(f) if d]
with open(os.path.join(k8s_dir, "secrets.example.yaml"), encoding="utf-8") as f:
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(f) if d}
for d in docs + list(secrets.values()):
    check(all(k in d for k in ("apiVersion", "kind", "metadata")) and "name" in d["metadata"],
          f"k8s: {d.get('kind')} {d.get('metadata', {}).get('name')} has apiVersion, kind, metadata.name")
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
sts = by_kind["StatefulSet"][0]
svc = by_kind["Service"][0]
mon = by_kind["ServiceMonitor"][0]
spec = sts["spec"]
tmpl = spec["template"]
labels = tmpl["metadata"]["labels"]
check(spec["replicas"] == 1, "k8s StatefulSet: one replica (qatd locks its data dir)")
check(spec["selector"]["matchLabels"].items() <= labels.items(), "k8s StatefulSet: selector matches the pod labels")
check(spec["serviceName"] == svc["metadata"]["name"], "k8s StatefulSet: serviceName is the Service")
check(svc["spec"]["selector"].items() <= labels.items(), "k8s Service: selector matches the pod labels")
pod = tmpl["spec"]
c = pod["containers"][0]
args = c.get("args", [])
check_qatd_args(args, "k8s StatefulSet args")
port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
for p in svc["spec"]["ports"]:
    check(p["targetPort"] in port_names, f"k8s Service: port {p['name']} targets a container port")
check(flag_value(args, "--listen").endswith(f":{port_names.get('grpc')}"), "k8s: --listen uses the grpc port")
check(flag_value(args, "--metrics-address").endswith(f":{port_names.get('metrics')}"), "k8s: --metrics-address uses the metrics port")
check(mon["spec"]["selector"]["matchLabels"].items() <= svc["metadata"].get("labels", {}).items(),
      "k8s ServiceMonitor: selector matches the Service labels")
check(all(e["port"] in [p["name"] for p in svc["spec"]["ports"]] for e in mon["spec"]["endpoints"]),
      "k8s ServiceMonitor: endpoint port is a Service port name")
volumes = {v["name"]: v for v in pod.get("volumes", [])}
claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
for m in c["volumeMounts"]:
    check(m["name"] in volumes or m["name"] in claims, f"k8s: volumeMount {m['name']} has a volume or PVC")
data_mount = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in claims]
check(bool(data_mount) and flag_value(args, "--data-dir").startswith(data_mount[0]), "k8s: --data-dir is on the PVC")
for v in volumes.values():
    if "secret" in v:
        check(v["secret"]["secretName"] in secrets, f"k8s: Secret {v['secret']['secretName']} is described in secrets.example.yaml")
mounted = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
for flag in ("--token-file", "--tls-cert", "--tls-key"):
    val = flag_value(args, flag)
    vol = [n for n, p in mounted.items() if val and val.startswith(p + "/")]
    key = val.rsplit("/", 1)[-1] if val else ""
    sec = volumes.get(vol[0], {}).get("secret", {}).get("secretName") if vol else None
    check(sec in secrets and key in secrets[sec].get("stringData", {}), f"k8s: {flag} is key {key} of a mounted Secret")
check(c["resources"]["limits"].get("nvidia.com/gpu") == 1, "k8s: requests one GPU (nvidia.com/gpu limit)")
check(pod["securityContext"].get("runAsNonRoot") is True, "k8s: runAsNonRoot")
grace = float(flag_value(args, "--cancel-grace-seconds") or 10)
check(pod.get("terminationGracePeriodSeconds", 30) > grace + 5, "k8s: terminationGracePeriodSeconds > --cancel-grace-seconds + 5")
for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
    check_health_command(c[probe]["exec"]["command"], f"k8s {probe}")

print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failing check(s)")
sys.exit(1 if failures else 0)
