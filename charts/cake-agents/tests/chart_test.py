#!/usr/bin/env python3
"""Offline tests of the cake-agents Helm chart and of the Dockerfiles in docker/.

Run by script/chart-test with the venv that script/setup builds (.tools/venv: PyYAML,
kubernetes-validate, dockerfile-parse) and helm from .tools/bin. No network and no cluster: where
a test needs a Kubernetes API (Helm's `lookup`, NOTES.txt from a dry-run install) it talks to a
tiny fake API server on 127.0.0.1 started by this file.

Prints one line per case (`ok - name` / `not ok - name: reason`) and a closing line
`chart: N passed, N failed`; exits 1 on any failure. Optional argument: a substring; only the
cases whose name contains it run.
"""

import base64
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "cake-agents"
VALUES_DIR = CHART / "tests" / "values"
INVALID_DIR = CHART / "tests" / "invalid"
DOCKER = ROOT / "docker"
TOOLS = ROOT / ".tools"
HELM = os.environ.get("CAKE_HELM", str(TOOLS / "bin" / "helm"))
KUBERNETES_VALIDATE = str(TOOLS / "venv" / "bin" / "kubernetes-validate")
K8S_VERSION = "1.33.0"
RELEASE = "cake-agents"
NAMESPACE = "cake-agents"
APP_VERSION = "0.1.0"
OPENCODE_VERSION = "1.18.33"
TIMEOUT = 180  # seconds, for every subprocess

# Kinds whose schemas kubernetes-validate does not bundle (CRDs); their shape is asserted here.
CRD_KINDS = {
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "VirtualService"),
    ("external-secrets.io/v1beta1", "ExternalSecret"),
}

# Env vars the chart always sets on the control plane.
ALWAYS_ENV = [
    "CAKE_LISTEN", "CAKE_PUBLIC_URL", "CAKE_DATA_DIR", "CAKE_LOG", "CAKE_LOG_JSON", "CAKE_RUNTIME",
    "CAKE_INSTANCE", "CAKE_SESSION_NAMESPACE", "CAKE_BROKER_LISTEN", "CAKE_BROKER_URL", "CAKE_DATA_PLANE_IMAGE", "CAKE_DATA_PLANE_INIT_IMAGE",
    "CAKE_DATA_PLANE_IMAGE_PULL_POLICY", "CAKE_DATA_PLANE_SERVICE_ACCOUNT", "CAKE_DATA_PLANE_RESOURCES",
    "CAKE_DATA_PLANE_NODE_SELECTOR", "CAKE_DATA_PLANE_TOLERATIONS", "CAKE_DATA_PLANE_IMAGE_PULL_SECRETS",
    "CAKE_DATA_PLANE_PENDING_GRACE", "CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS", "BETTER_AUTH_SECRET", "CAKE_EMAIL_AND_PASSWORD_ENABLED", "CAKE_HEADER_AUTH_ENABLED",
    "CAKE_OIDC_ENABLED", "CAKE_S3_ENABLED", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET",
]
HEADER_AUTH_ENV = [
    "CAKE_HEADER_AUTH_EMAIL_HEADER", "CAKE_HEADER_AUTH_EMAIL_CLAIM", "CAKE_HEADER_AUTH_JWT_HEADER",
    "CAKE_HEADER_AUTH_USER", "CAKE_HEADER_AUTH_USER_CLAIM", "CAKE_HEADER_AUTH_TRUSTED_PROXIES",
    "CAKE_HEADER_AUTH_JWKS_URL", "CAKE_HEADER_AUTH_JWT_ISSUER", "CAKE_HEADER_AUTH_JWT_AUDIENCE",
]

# Every value seed 001 names, with the default the seed states (None: no default stated).
SEED_VALUES = {
    "registry.default": None,
    "controlPlane.host": None,
    "controlPlane.image.repository": None,
    "controlPlane.image.tag": None,
    "dataPlane.image.repository": None,
    "dataPlane.image.tag": None,
    "dataPlaneInit.image.repository": None,
    "dataPlaneInit.image.tag": None,
    "externalDatabase.existingSecret": None,
    "externalDatabase.existingSecretKey": "DATABASE_URL",
    "externalDatabase.existingSecretEnv": None,
    "postgresql.enabled": True,  # "the chart defaults to embedded PostgreSQL"
    "headerAuth.enabled": False,  # seed 002
    "headerAuth.email.header": "",  # seed 002: unset
    "headerAuth.email.claim": "email",
    "headerAuth.jwt.header": "",
    "headerAuth.user.header": "",
    "headerAuth.user.claim": "name",
    "sessionNamespace.name": "",  # "defaults to the Helm release namespace"
    "sessionNamespace.create": None,
    "istio.enabled": False,
    "istio.gateway.name": None,
    "linear.secret.create": None,
    "linear.secret.name": None,
    "litellm.secret.create": None,
    "litellm.secret.name": None,
    "slack.secret.create": None,
    "slack.secret.name": None,
    "betterAuth.secret": None,
}


# --------------------------------------------------------------------------------------------
# Test harness


class Failure(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failure(message)


def eq(actual, expected, what):
    if actual != expected:
        raise Failure(f"{what}: expected {expected!r}, got {actual!r}")


CASES = []


def case(name):
    def register(fn):
        CASES.append((name, fn))
        return fn
    return register


def run(cmd, env=None, timeout=TIMEOUT, cwd=None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


# --------------------------------------------------------------------------------------------
# Rendering


_render_cache = {}


class RenderError(Exception):
    pass


def helm_template(values=None, sets=(), set_json=(), release=RELEASE, namespace=NAMESPACE, extra=()):
    cmd = [HELM, "template", release, str(CHART), "--namespace", namespace]
    if values:
        cmd += ["-f", str(values)]
    for s in sets:
        cmd += ["--set", s]
    for s in set_json:
        cmd += ["--set-json", s]
    cmd += list(extra)
    return run(cmd)


def render(values=None, sets=(), set_json=(), release=RELEASE, namespace=NAMESPACE, extra=()):
    """Renders the chart; returns the list of manifests (dicts). Cached per arguments."""
    key = (str(values), tuple(sets), tuple(set_json), release, namespace, tuple(extra))
    if key not in _render_cache:
        r = helm_template(values, sets, set_json, release, namespace, extra)
        if r.returncode != 0:
            _render_cache[key] = RenderError(r.stderr.strip()[-2000:])
        else:
            _render_cache[key] = [d for d in yaml.safe_load_all(r.stdout) if d]
    out = _render_cache[key]
    if isinstance(out, RenderError):
        raise Failure(f"helm template failed: {out}")
    return out


def values_file(name):
    return None if name == "defaults" else VALUES_DIR / f"{name}.yaml"


def docs_of(name, **kw):
    return render(values_file(name), **kw)


def find_all(docs, kind, name=None, namespace=None):
    return [d for d in docs if d.get("kind") == kind
            and (name is None or d["metadata"]["name"] == name)
            and (namespace is None or d["metadata"].get("namespace") == namespace)]


def find(docs, kind, name=None, namespace=None):
    found = find_all(docs, kind, name, namespace)
    check(len(found) == 1, f"expected exactly one {kind}{' ' + name if name else ''}, found {len(found)}")
    return found[0]


def control_plane(docs):
    dep = find(docs, "Deployment")
    containers = dep["spec"]["template"]["spec"]["containers"]
    return dep, next(c for c in containers if c["name"] == "control-plane")


def env_of(docs):
    """{name: EnvVar} of the control plane container; fails on duplicate names."""
    _, c = control_plane(docs)
    names = [e["name"] for e in c.get("env", [])]
    dups = sorted({n for n in names if names.count(n) > 1})
    check(not dups, f"duplicate env vars: {dups}")
    return {e["name"]: e for e in c.get("env", [])}


def env_value(env, name):
    check(name in env, f"env {name} is not set")
    check("value" in env[name], f"env {name} is not a plain value: {env[name]}")
    return env[name]["value"]


def secret_ref(env, name):
    check(name in env, f"env {name} is not set")
    ref = env[name].get("valueFrom", {}).get("secretKeyRef")
    check(ref is not None, f"env {name} is not a secretKeyRef: {env[name]}")
    return ref


def secret_data(secret):
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


# --------------------------------------------------------------------------------------------
# A fake Kubernetes API server for Helm's lookup and dry-run installs (127.0.0.1 only).

API_RESOURCES = [
    ("", "v1", "Secret", "secrets", True), ("", "v1", "Service", "services", True),
    ("", "v1", "ServiceAccount", "serviceaccounts", True), ("", "v1", "Namespace", "namespaces", False),
    ("apps", "v1", "Deployment", "deployments", True), ("apps", "v1", "StatefulSet", "statefulsets", True),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True),
    ("networking.istio.io", "v1", "Gateway", "gateways", True),
    ("networking.istio.io", "v1", "VirtualService", "virtualservices", True),
    ("external-secrets.io", "v1beta1", "ExternalSecret", "externalsecrets", True),
]


class FakeKube:
    """Serves discovery, /version and GET of the given Secrets; everything else is 404."""

    def __init__(self, secrets=()):
        store = {f"/api/v1/namespaces/{s['metadata']['namespace']}/secrets/{s['metadata']['name']}": s
                 for s in secrets}
        groups = {}
        for g, v, kind, plural, namespaced in API_RESOURCES:
            groups.setdefault((g, v), []).append({
                "name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                "verbs": ["get", "list", "create", "update", "patch", "delete"]})
        self.requests = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.split("?")[0]
                requests.append(path)
                if path == "/version":
                    return self.send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                           "platform": "linux/amd64"})
                if path == "/api":
                    return self.send(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/apis":
                    return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                         "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                        for (g, v) in groups if g]})
                for (g, v), resources in groups.items():
                    if path == (f"/apis/{g}/{v}" if g else "/api/v1"):
                        return self.send(200, {"kind": "APIResourceList",
                                               "groupVersion": f"{g}/{v}" if g else v,
                                               "resources": resources})
                if path in store:
                    return self.send(200, store[path])
                if path.endswith("/secrets"):  # Helm's release history: none
                    return self.send(200, {"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": []})
                return self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "reason": "NotFound", "code": 404})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.tmp = tempfile.TemporaryDirectory()
        self.kubeconfig = Path(self.tmp.name) / "kubeconfig"
        port = self.server.server_address[1]
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "users": [{"name": "fake", "user": {}}],
        }))
        self.kubeconfig.chmod(0o600)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.tmp.cleanup()


def helm_env(kubeconfig):
    env = dict(os.environ)
    env["KUBECONFIG"] = str(kubeconfig)
    tmp = Path(kubeconfig).parent
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env[var] = str(tmp / sub)
    return env


# --------------------------------------------------------------------------------------------
# Matrix: helm lint --strict, kubernetes-validate --strict, invariants of every rendering

MATRIX = ["seed-minimal", "defaults", "external-db-secret", "external-db-env", "session-namespace",
          "istio-gateway", "istio-shared-gateway", "ingress", "oidc", "secrets-existing",
          "secrets-created", "external-secrets", "everything"]


def session_ns_of(name):
    return "cake-agents-sessions" if name == "session-namespace" else NAMESPACE


def fullname_of(name):
    return "cake" if name == "everything" else "cake-agents"


def registry_of(name):
    return {"seed-minimal": "<registry>/", "external-db-secret": "123456789012.dkr.ecr.us-east-1.amazonaws.com/",
            "everything": "registry.example.com/mirror/"}.get(name, "")


def matrix_cases(name):
    vf = values_file(name)

    @case(f"{name}: helm lint --strict")
    def _lint():
        cmd = [HELM, "lint", "--strict", str(CHART), "--namespace", NAMESPACE] + (["-f", str(vf)] if vf else [])
        r = run(cmd)
        check(r.returncode == 0, f"helm lint failed: {(r.stdout + r.stderr).strip()[-1500:]}")

    @case(f"{name}: kubernetes-validate --strict (k8s {K8S_VERSION})")
    def _validate():
        docs = docs_of(name)
        plain = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CRD_KINDS]
        unknown = [(d.get("apiVersion"), d.get("kind")) for d in plain
                   if "." in d.get("apiVersion", "").split("/")[0] and not d["apiVersion"].endswith(".k8s.io/v1")]
        check(not unknown, f"kinds outside Kubernetes' own API: {unknown}")
        r = subprocess.run([KUBERNETES_VALIDATE, "--strict", "--quiet", "-k", K8S_VERSION, "-"],
                           input=yaml.safe_dump_all(plain), capture_output=True, text=True, timeout=TIMEOUT)
        out = (r.stdout + r.stderr).strip()  # any WARN (e.g. a kind without a schema) fails too
        check(r.returncode == 0 and not out, f"rc={r.returncode}: {out[-1500:]}")

    @case(f"{name}: recommended labels and namespaces on every resource")
    def _labels():
        for d in docs_of(name):
            labels = d["metadata"].get("labels", {})
            what = f"{d['kind']}/{d['metadata']['name']}"
            for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                        "app.kubernetes.io/managed-by", "app.kubernetes.io/component",
                        "app.kubernetes.io/part-of", "helm.sh/chart"):
                check(key in labels, f"{what} lacks label {key}")
            eq(labels["app.kubernetes.io/instance"], RELEASE, f"{what} instance label")
            eq(labels["app.kubernetes.io/managed-by"], "Helm", f"{what} managed-by label")
            if d["kind"] != "Namespace":
                check(d["metadata"].get("namespace"), f"{what} has no namespace")

    @case(f"{name}: control plane Deployment (image, ports, probes, securityContext, volumes)")
    def _deployment():
        docs = docs_of(name)
        dep, c = control_plane(docs)
        spec = dep["spec"]["template"]["spec"]
        eq(c["image"], f"{registry_of(name)}cake-agents/web:" + ("<image-tag>" if name == "seed-minimal" else
                                                                   "1.2.3" if name == "external-db-secret" else APP_VERSION),
           "control plane image")
        eq(c["ports"], [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "broker", "containerPort": 8081, "protocol": "TCP"}], "container ports")
        prefix = {"istio-shared-gateway": "/agents", "ingress": "/agents", "everything": "/tools/agents"}.get(name, "")
        for probe, path in (("livenessProbe", "/api/health"), ("readinessProbe", "/readyz"), ("startupProbe", "/api/health")):
            eq(c[probe]["httpGet"], {"path": prefix + path, "port": "http"}, probe)
        check(c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 120,
              "startupProbe allows less than 2 minutes")
        psc, sc = spec["securityContext"], c["securityContext"]
        check(psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, f"pod not non-root: {psc}")
        eq(psc["seccompProfile"], {"type": "RuntimeDefault"}, "seccompProfile")
        check(sc["readOnlyRootFilesystem"] is True, "root filesystem not read-only")
        check(sc["allowPrivilegeEscalation"] is False, "privilege escalation allowed")
        eq(sc["capabilities"], {"drop": ["ALL"]}, "capabilities")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in spec["volumes"]}
        for path in ("/tmp", "/var/lib/cake"):
            check(path in mounts and "emptyDir" in vols[mounts[path]], f"{path} is not an emptyDir mount")
        eq(spec["serviceAccountName"], fullname_of(name), "serviceAccountName")
        eq(spec.get("enableServiceLinks"), False, "enableServiceLinks")
        check("checksum/secrets" in dep["spec"]["template"]["metadata"]["annotations"], "no checksum annotation")
        svc = find(docs, "Service", fullname_of(name))
        eq(svc["spec"]["ports"], [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}], "Service ports")
        eq(svc["spec"]["selector"], dep["spec"]["selector"]["matchLabels"], "Service selector")
        eq(dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"], "control-plane", "selector component")

    @case(f"{name}: control plane env always set")
    def _always_env():
        docs = docs_of(name)
        env = env_of(docs)
        missing = [n for n in ALWAYS_ENV if n not in env]
        check(not missing, f"missing env: {missing}")
        eq(env_value(env, "CAKE_LISTEN"), "0.0.0.0:8080", "CAKE_LISTEN")
        eq(env_value(env, "CAKE_RUNTIME"), "kubernetes", "CAKE_RUNTIME")
        eq(env_value(env, "CAKE_LOG_JSON"), "true", "CAKE_LOG_JSON")
        eq(env_value(env, "CAKE_DATA_DIR"), "/var/lib/cake", "CAKE_DATA_DIR")
        eq(env_value(env, "CAKE_INSTANCE"), RELEASE, "CAKE_INSTANCE")
        eq(env_value(env, "CAKE_SESSION_NAMESPACE"), session_ns_of(name), "CAKE_SESSION_NAMESPACE")
        reg = registry_of(name)
        dp_tag = "<image-tag>" if name == "seed-minimal" else APP_VERSION
        eq(env_value(env, "CAKE_DATA_PLANE_IMAGE"), f"{reg}cake-agents/data-plane:{dp_tag}", "CAKE_DATA_PLANE_IMAGE")
        init = env_value(env, "CAKE_DATA_PLANE_INIT_IMAGE")
        if name == "everything":
            eq(init, f"{reg}cake-agents/data-plane-init@sha256:" + "0123456789abcdef" * 4, "CAKE_DATA_PLANE_INIT_IMAGE")
        else:
            eq(init, f"{reg}cake-agents/data-plane-init:{dp_tag}", "CAKE_DATA_PLANE_INIT_IMAGE")
        for var in ("CAKE_DATA_PLANE_RESOURCES", "CAKE_DATA_PLANE_NODE_SELECTOR"):
            check(isinstance(json.loads(env_value(env, var)), dict), f"{var} is not a JSON object")
        res = json.loads(env_value(env, "CAKE_DATA_PLANE_RESOURCES"))
        check(set(res) <= {"requests", "limits"} and "requests" in res, f"CAKE_DATA_PLANE_RESOURCES: {res}")
        check(isinstance(json.loads(env_value(env, "CAKE_DATA_PLANE_TOLERATIONS")), list), "tolerations not a JSON array")
        for n, e in env.items():
            check(re.fullmatch(r"[A-Z_][A-Z0-9_]*", n), f"env name {n!r}")
            check(("value" in e) != ("valueFrom" in e), f"env {n} needs exactly one of value/valueFrom")
        for n in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
            eq(secret_ref(env, n).get("optional"), True, f"{n} optional")
        _, c = control_plane(docs)
        env_from = c["envFrom"]
        check(all(e["secretRef"].get("optional") is True for e in env_from[:2]), f"envFrom not optional: {env_from}")

    @case(f"{name}: RBAC for session workloads and leader election")
    def _rbac():
        docs = docs_of(name)
        sns, fn = session_ns_of(name), fullname_of(name)
        role = find(docs, "Role", f"{fn}-sessions")
        eq(role["metadata"]["namespace"], sns, "sessions Role namespace")
        rules = {}
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    rules.setdefault((group, res), set()).update(rule["verbs"])
        full = {"create", "get", "list", "watch", "patch", "delete"}
        for res in ("pods", "services", "secrets"):
            check(full <= rules.get(("", res), set()), f"verbs on {res}: {sorted(rules.get(('', res), []))}")
        check({"get"} <= rules.get(("", "pods/log"), set()), "no get on pods/log")
        check({"get", "list", "watch"} <= rules.get(("", "events"), set()), "no read on events")
        check(not any(res in ("*",) or "*" in verbs for (g, res), verbs in rules.items()), "wildcards in Role")
        check(("", "pods/exec") not in rules, "pods/exec granted")
        rb = find(docs, "RoleBinding", f"{fn}-sessions")
        eq(rb["metadata"]["namespace"], sns, "sessions RoleBinding namespace")
        eq(rb["roleRef"], {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{fn}-sessions"}, "roleRef")
        eq(rb["subjects"], [{"kind": "ServiceAccount", "name": fn, "namespace": NAMESPACE}], "RoleBinding subjects")
        lease = find(docs, "Role", f"{fn}-leader-election")
        eq(lease["metadata"]["namespace"], NAMESPACE, "lease Role namespace")
        eq([(r["apiGroups"], r["resources"]) for r in lease["rules"]], [(["coordination.k8s.io"], ["leases"])], "lease rules")
        check({"get", "create", "update"} <= set(lease["rules"][0]["verbs"]), "lease verbs")
        lrb = find(docs, "RoleBinding", f"{fn}-leader-election")
        eq(lrb["subjects"], [{"kind": "ServiceAccount", "name": fn, "namespace": NAMESPACE}], "lease RoleBinding subjects")
        check(not find_all(docs, "ClusterRole") and not find_all(docs, "ClusterRoleBinding"), "cluster-wide RBAC rendered")

    @case(f"{name}: NetworkPolicy isolates data-plane pods")
    def _netpol():
        docs = docs_of(name)
        pols = find_all(docs, "NetworkPolicy", f"{fullname_of(name)}-data-plane")
        if name == "everything":
            eq(pols, [], "NetworkPolicy with networkPolicy.enabled=false")
            return
        pol = find(docs, "NetworkPolicy", f"{fullname_of(name)}-data-plane")
        eq(pol["metadata"]["namespace"], session_ns_of(name), "NetworkPolicy namespace")
        spec = pol["spec"]
        eq(spec["podSelector"], {"matchLabels": {
            "app.kubernetes.io/name": "cake-agents", "app.kubernetes.io/instance": RELEASE,
            "app.kubernetes.io/component": "data-plane"}}, "podSelector")
        eq(spec["policyTypes"], ["Ingress"], "policyTypes")
        eq(spec["ingress"], [{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                      "podSelector": {"matchLabels": {"app.kubernetes.io/name": "cake-agents",
                                                      "app.kubernetes.io/instance": RELEASE,
                                                      "app.kubernetes.io/component": "control-plane"}}}],
            "ports": [{"protocol": "TCP", "port": 4096}]}], "ingress rule")
        dep, _ = control_plane(docs)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        for k, v in spec["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items():
            eq(pod_labels.get(k), v, f"control plane pod label {k} (must match the policy)")

    @case(f"{name}: data-plane ServiceAccount")
    def _dp_sa():
        docs = docs_of(name)
        env = env_of(docs)
        if name == "everything":
            eq(env_value(env, "CAKE_DATA_PLANE_SERVICE_ACCOUNT"), "sessions", "existing data-plane SA")
            check(not find_all(docs, "ServiceAccount", "sessions"), "an existing SA was rendered")
            return
        sa_name = f"{fullname_of(name)}-data-plane"
        eq(env_value(env, "CAKE_DATA_PLANE_SERVICE_ACCOUNT"), sa_name, "CAKE_DATA_PLANE_SERVICE_ACCOUNT")
        sa = find(docs, "ServiceAccount", sa_name)
        eq(sa["metadata"]["namespace"], session_ns_of(name), "data-plane SA namespace")
        eq(sa.get("automountServiceAccountToken"), False, "automountServiceAccountToken")


for _name in MATRIX:
    matrix_cases(_name)


# --------------------------------------------------------------------------------------------
# What each values file must render


@case("seed-minimal: values file is seed 001's minimal values verbatim")
def _():
    seed = (ROOT.parent / "shared" / "seeds" / "001_e4eb465ad8aedfe0.txt")
    text = (VALUES_DIR / "seed-minimal.yaml").read_text()
    body = "".join(l for l in text.splitlines(True) if not l.startswith("#"))
    if seed.exists():  # the seeds live beside the repository on the machine that wrote the chart
        src = seed.read_text()
        start = src.index("Start from a small values file and expand from there:\n")
        block = src[start:].split("\n", 1)[1]
        block = block[:block.index("Those header auth values are useful")]
        eq(body, block, "seed-minimal.yaml body")
    values = yaml.safe_load(body)
    eq(values["registry"], {"default": "<registry>"}, "registry")
    eq(values["postgresql"], {"enabled": False}, "postgresql")


@case("seed-minimal: images prefixed by registry.default, external DATABASE_URL, no embedded PostgreSQL")
def _():
    docs = docs_of("seed-minimal")
    env = env_of(docs)
    eq(secret_ref(env, "DATABASE_URL"), {"name": "cake-agents-db", "key": "DATABASE_URL"}, "DATABASE_URL ref")
    check(not any(n.startswith("PG") for n in env), "PG* env set")
    eq(find_all(docs, "StatefulSet"), [], "StatefulSets")
    eq([s["metadata"]["name"] for s in find_all(docs, "Secret")], ["cake-agents-better-auth"], "Secrets")
    eq(env_value(env, "CAKE_PUBLIC_URL"), "https://agents.example.com", "CAKE_PUBLIC_URL")
    check("CAKE_PATH_PREFIX" not in env, "CAKE_PATH_PREFIX set without pathPrefix")


@case("seed-minimal: header auth env exactly as seed 002")
def _():
    env = env_of(docs_of("seed-minimal"))
    got = {n: env_value(env, n) for n in ["CAKE_HEADER_AUTH_ENABLED"] + HEADER_AUTH_ENV if n in env}
    eq(got, {
        "CAKE_HEADER_AUTH_ENABLED": "true",
        "CAKE_HEADER_AUTH_EMAIL_HEADER": "x-auth-request-email",
        "CAKE_HEADER_AUTH_EMAIL_CLAIM": "email",
        "CAKE_HEADER_AUTH_JWT_HEADER": "x-auth-request-access-token",
        "CAKE_HEADER_AUTH_USER": "x-auth-request-user",
        "CAKE_HEADER_AUTH_USER_CLAIM": "name",
    }, "header auth env")


@case("defaults: embedded PostgreSQL StatefulSet, Services, PVC and credentials Secret")
def _():
    docs = docs_of("defaults")
    sts = find(docs, "StatefulSet", "cake-agents-postgresql")
    eq(sts["spec"]["serviceName"], "cake-agents-postgresql-hl", "serviceName")
    eq(find(docs, "Service", "cake-agents-postgresql-hl")["spec"]["clusterIP"], "None", "headless Service")
    eq(find(docs, "Service", "cake-agents-postgresql")["spec"]["ports"][0]["port"], 5432, "PostgreSQL port")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    eq(c["image"], "postgres:17.6-bookworm", "PostgreSQL image")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    eq(refs["POSTGRES_PASSWORD"], {"name": "cake-agents-postgresql", "key": "POSTGRES_PASSWORD"}, "POSTGRES_PASSWORD ref")
    eq(c["securityContext"]["readOnlyRootFilesystem"], True, "PostgreSQL read-only root")
    check(sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], "PostgreSQL runs as root")
    vct = sts["spec"]["volumeClaimTemplates"][0]
    eq(vct["spec"]["resources"]["requests"]["storage"], "8Gi", "PVC size")
    eq(vct["spec"]["accessModes"], ["ReadWriteOnce"], "PVC access modes")
    secret = find(docs, "Secret", "cake-agents-postgresql")
    eq(secret["metadata"]["annotations"].get("helm.sh/resource-policy"), "keep", "resource-policy")
    data = secret_data(secret)
    eq(sorted(data), ["DATABASE_URL", "POSTGRES_DB", "POSTGRES_PASSWORD", "POSTGRES_USER"], "Secret keys")
    check(re.fullmatch(r"[A-Za-z0-9]{32}", data["POSTGRES_PASSWORD"]), "generated password")
    eq(data["DATABASE_URL"], f"postgres://cake:{data['POSTGRES_PASSWORD']}@cake-agents-postgresql.cake-agents"
                             ".svc.cluster.local:5432/cake?sslmode=disable", "DATABASE_URL")
    eq(secret_ref(env_of(docs), "DATABASE_URL"), {"name": "cake-agents-postgresql", "key": "DATABASE_URL"},
       "control plane DATABASE_URL ref")


@case("defaults: generated BETTER_AUTH_SECRET (64 chars, kept on uninstall)")
def _():
    docs = docs_of("defaults")
    secret = find(docs, "Secret", "cake-agents-better-auth")
    eq(secret["metadata"]["annotations"].get("helm.sh/resource-policy"), "keep", "resource-policy")
    value = secret_data(secret)["BETTER_AUTH_SECRET"]
    check(len(value) >= 48 and re.fullmatch(r"[A-Za-z0-9]+", value), f"weak secret ({len(value)} chars)")
    eq(secret_ref(env_of(docs), "BETTER_AUTH_SECRET"), {"name": "cake-agents-better-auth", "key": "BETTER_AUTH_SECRET"},
       "BETTER_AUTH_SECRET ref")


@case("defaults: env values (auth off, no registry, port-forward URL, no routes)")
def _():
    docs = docs_of("defaults")
    env = env_of(docs)
    eq(env_value(env, "CAKE_PUBLIC_URL"), "http://127.0.0.1:8080", "CAKE_PUBLIC_URL")
    eq(env_value(env, "CAKE_HEADER_AUTH_ENABLED"), "false", "CAKE_HEADER_AUTH_ENABLED")
    check(not [n for n in HEADER_AUTH_ENV if n in env], "header auth details set while disabled")
    eq(env_value(env, "CAKE_OIDC_ENABLED"), "false", "CAKE_OIDC_ENABLED")
    check(not [n for n in env if n.startswith("CAKE_OIDC_") and n != "CAKE_OIDC_ENABLED"], "OIDC details set")
    eq(env_value(env, "CAKE_S3_ENABLED"), "false", "CAKE_S3_ENABLED")
    eq(env_value(env, "CAKE_EMAIL_AND_PASSWORD_ENABLED"), "true", "CAKE_EMAIL_AND_PASSWORD_ENABLED")
    check("CAKE_ADMIN_EMAILS" not in env, "CAKE_ADMIN_EMAILS set")
    eq(env_value(env, "CAKE_DATA_PLANE_IMAGE_PULL_POLICY"), "IfNotPresent", "pull policy")
    eq(env_value(env, "CAKE_DATA_PLANE_IMAGE_PULL_SECRETS"), "", "pull secrets")
    eq(json.loads(env_value(env, "CAKE_DATA_PLANE_RESOURCES")),
       {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}}, "resources")
    eq(env_value(env, "CAKE_DATA_PLANE_NODE_SELECTOR"), "{}", "node selector")
    eq(env_value(env, "CAKE_DATA_PLANE_TOLERATIONS"), "[]", "tolerations")
    eq(secret_ref(env, "SLACK_BOT_TOKEN"), {"name": "cake-agents-slack", "key": "SLACK_BOT_TOKEN", "optional": True}, "Slack")
    for kind in ("Ingress", "Gateway", "VirtualService", "Namespace", "ExternalSecret"):
        eq(find_all(docs, kind), [], kind)


@case("external-db-secret: DATABASE_URL from existingSecret/existingSecretKey; registry slash trimmed")
def _():
    docs = docs_of("external-db-secret")
    env = env_of(docs)
    eq(secret_ref(env, "DATABASE_URL"), {"name": "rds-cake", "key": "url"}, "DATABASE_URL ref")
    eq(find_all(docs, "StatefulSet"), [], "StatefulSets")
    check(not find_all(docs, "Secret", "cake-agents-postgresql"), "PostgreSQL Secret rendered")
    check("//" not in env_value(env, "CAKE_DATA_PLANE_IMAGE"), "double slash in image")


@case("external-db-env: libpq vars from existingSecretEnv, no DATABASE_URL")
def _():
    env = env_of(docs_of("external-db-env"))
    check("DATABASE_URL" not in env, "DATABASE_URL set")
    got = {n: secret_ref(env, n) for n in env if n.startswith("PG")}
    eq(got, {
        "PGHOST": {"name": "rds-cake", "key": "host"},
        "PGPORT": {"name": "rds-cake", "key": "port"},
        "PGUSER": {"name": "rds-cake", "key": "username"},
        "PGPASSWORD": {"name": "rds-cake-master-password", "key": "password"},
        "PGDATABASE": {"name": "rds-cake", "key": "dbname"},
        "PGSSLMODE": {"name": "rds-cake", "key": "sslmode"},
    }, "PG env")


@case("session-namespace: Namespace created, session resources there, control plane in the release namespace")
def _():
    docs = docs_of("session-namespace")
    ns = find(docs, "Namespace", "cake-agents-sessions")
    eq(ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce"), "restricted", "namespace label")
    in_sessions = sorted((d["kind"], d["metadata"]["name"]) for d in docs
                         if d["metadata"].get("namespace") == "cake-agents-sessions")
    eq(in_sessions, [("NetworkPolicy", "cake-agents-data-plane"), ("NetworkPolicy", "cake-agents-data-plane-egress"),
                     ("Role", "cake-agents-sessions"), ("RoleBinding", "cake-agents-sessions"),
                     ("ServiceAccount", "cake-agents-data-plane")],
       "resources in the session namespace")
    dep, _ = control_plane(docs)
    eq(dep["metadata"]["namespace"], NAMESPACE, "Deployment namespace")


@case("session-namespace: data-plane scheduling env (resources, nodeSelector, tolerations, pull secrets)")
def _():
    env = env_of(docs_of("session-namespace"))
    eq(json.loads(env_value(env, "CAKE_DATA_PLANE_RESOURCES")),
       {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "8Gi"}}, "resources")
    eq(json.loads(env_value(env, "CAKE_DATA_PLANE_NODE_SELECTOR")), {"workload": "sessions"}, "node selector")
    eq(json.loads(env_value(env, "CAKE_DATA_PLANE_TOLERATIONS")),
       [{"key": "dedicated", "operator": "Equal", "value": "sessions", "effect": "NoSchedule"}], "tolerations")
    eq(env_value(env, "CAKE_DATA_PLANE_IMAGE_PULL_SECRETS"), "regcred,mirror", "pull secrets")
    eq(env_value(env, "CAKE_DATA_PLANE_PENDING_GRACE"), "300", "pending grace")
    eq(json.loads(env_value(env, "CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS")),
       {"workspace": "50Gi", "home": "2Gi", "tmp": ""}, "volume size limits")


@case("defaults: data-plane pending grace and emptyDir size limits; no egress policy")
def _():
    docs = docs_of("defaults")
    env = env_of(docs)
    eq(env_value(env, "CAKE_DATA_PLANE_PENDING_GRACE"), "120", "pending grace")
    eq(json.loads(env_value(env, "CAKE_DATA_PLANE_VOLUME_SIZE_LIMITS")),
       {"workspace": "10Gi", "home": "2Gi", "tmp": "1Gi"}, "volume size limits")
    eq(find_all(docs, "NetworkPolicy", "cake-agents-data-plane-egress"), [], "egress policy (off by default)")


@case("session-namespace: egress NetworkPolicy (DNS, internet but metadata and cluster CIDRs, extra rules)")
def _():
    pol = find(docs_of("session-namespace"), "NetworkPolicy", "cake-agents-data-plane-egress")
    eq(pol["metadata"]["namespace"], "cake-agents-sessions", "egress policy namespace")
    spec = pol["spec"]
    eq(spec["podSelector"], {"matchLabels": {
        "app.kubernetes.io/name": "cake-agents", "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "data-plane"}}, "podSelector")
    eq(spec["policyTypes"], ["Egress"], "policyTypes")
    eq(spec["egress"], [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32", "10.0.0.0/8"]}},
                {"ipBlock": {"cidr": "::/0", "except": ["fd00:ec2::254/128", "fd00:10::/64"]}}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                 "podSelector": {"matchLabels": {
                     "app.kubernetes.io/name": "cake-agents", "app.kubernetes.io/instance": RELEASE,
                     "app.kubernetes.io/component": "control-plane"}}}],
         "ports": [{"protocol": "TCP", "port": 8081}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "litellm"}}}],
         "ports": [{"protocol": "TCP", "port": 4000}]},
    ], "egress rules")
    # Only the egress policy is rendered when the ingress one is off.
    docs = render(sets=["networkPolicy.enabled=false", "networkPolicy.egress.enabled=true"],
                  set_json=["networkPolicy.egress.blockedCidrs=[]"])
    eq([p["metadata"]["name"] for p in find_all(docs, "NetworkPolicy")], ["cake-agents-data-plane-egress"], "policies")
    eq(find(docs, "NetworkPolicy")["spec"]["egress"][1], {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}},
                                                                 {"ipBlock": {"cidr": "::/0"}}]}, "no except")


@case("defaults: one replica, RollingUpdate without a gap; a strategy set as a whole is used as given")
def _():
    dep, _ = control_plane(docs_of("defaults"))
    eq(dep["spec"]["replicas"], 1, "replicas")
    eq(dep["spec"]["strategy"], {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
       "strategy")
    dep, _ = control_plane(render(set_json=['controlPlane.deployment.strategy={"type":"Recreate"}']))
    eq(dep["spec"]["strategy"], {"type": "Recreate"}, "strategy")


@case("session-namespace: sessionNamespace.name without create renders no Namespace")
def _():
    docs = render(sets=["sessionNamespace.name=shared-sessions"])
    eq(find_all(docs, "Namespace"), [], "Namespace")
    eq(find(docs, "Role", "cake-agents-sessions")["metadata"]["namespace"], "shared-sessions", "Role namespace")
    eq(env_value(env_of(docs), "CAKE_SESSION_NAMESPACE"), "shared-sessions", "CAKE_SESSION_NAMESPACE")


@case("istio-gateway: Gateway created (HTTPS credential, HTTP redirect) and VirtualService bound to it")
def _():
    docs = docs_of("istio-gateway")
    hosts = ["agents.example.com", "agents.example.org"]
    gw = find(docs, "Gateway", "cake-agents")
    eq(gw["apiVersion"], "networking.istio.io/v1", "Gateway apiVersion")
    eq(gw["metadata"]["namespace"], NAMESPACE, "Gateway namespace")
    eq(gw["spec"]["selector"], {"istio": "ingressgateway"}, "Gateway selector")
    eq(gw["spec"]["servers"], [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts, "tls": {"httpsRedirect": True}},
        {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": hosts,
         "tls": {"mode": "SIMPLE", "credentialName": "agents-example-com-tls"}}], "Gateway servers")
    vs = find(docs, "VirtualService", "cake-agents")
    eq(vs["apiVersion"], "networking.istio.io/v1", "VirtualService apiVersion")
    eq(vs["spec"]["hosts"], hosts, "VirtualService hosts")
    eq(vs["spec"]["gateways"], ["cake-agents/cake-agents"], "VirtualService gateways")
    eq(vs["spec"]["http"], [{"name": "control-plane", "match": [{"uri": {"prefix": "/"}}],
                             "route": [{"destination": {"host": "cake-agents.cake-agents.svc.cluster.local",
                                                        "port": {"number": 80}}}],
                             "timeout": "0s"}], "VirtualService http")
    eq(find_all(docs, "Ingress"), [], "Ingress")


@case("istio-gateway: a Gateway without credentialName serves plain HTTP only")
def _():
    docs = render(sets=["istio.enabled=true", "controlPlane.host=agents.example.com"])
    gw = find(docs, "Gateway")
    eq(gw["spec"]["servers"], [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                                "hosts": ["agents.example.com"]}], "servers")


@case("istio-shared-gateway: no Gateway, VirtualService on the shared one, under pathPrefix")
def _():
    docs = docs_of("istio-shared-gateway")
    eq(find_all(docs, "Gateway"), [], "Gateway")
    vs = find(docs, "VirtualService", "cake-agents")
    eq(vs["spec"]["gateways"], ["istio-system/shared-gateway"], "gateways")
    eq(vs["spec"]["hosts"], ["agents.example.com"], "hosts")
    eq(vs["spec"]["http"][0]["match"], [{"uri": {"prefix": "/agents"}}], "match")
    env = env_of(docs)
    eq(env_value(env, "CAKE_PATH_PREFIX"), "/agents", "CAKE_PATH_PREFIX")
    eq(env_value(env, "CAKE_PUBLIC_URL"), "https://agents.example.com/agents", "CAKE_PUBLIC_URL")


@case("ingress: Ingress with class, annotations, TLS and a rule per host under pathPrefix")
def _():
    docs = docs_of("ingress")
    ing = find(docs, "Ingress", "cake-agents")
    eq(ing["spec"]["ingressClassName"], "nginx", "ingressClassName")
    eq(ing["metadata"]["annotations"], {"nginx.ingress.kubernetes.io/proxy-buffering": "off"}, "annotations")
    eq(ing["spec"]["tls"], [{"secretName": "agents-tls", "hosts": ["agents.example.com", "cake.example.com"]}], "tls")
    path = {"path": "/agents", "pathType": "Prefix",
            "backend": {"service": {"name": "cake-agents", "port": {"name": "http"}}}}
    eq(ing["spec"]["rules"], [{"host": h, "http": {"paths": [path]}} for h in ("agents.example.com", "cake.example.com")],
       "rules")
    eq(find_all(docs, "VirtualService"), [], "VirtualService")


@case("ingress: without a host the Ingress has one host-less rule for /")
def _():
    ing = find(render(sets=["ingress.enabled=true"]), "Ingress")
    eq(ing["spec"]["rules"], [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
        "service": {"name": "cake-agents", "port": {"name": "http"}}}}]}}], "rules")


@case("the credential broker: its own port (8081) on the pod and the Service, CAKE_BROKER_URL in the cluster")
def _():
    docs = docs_of("defaults")
    env = env_of(docs)
    eq(env_value(env, "CAKE_BROKER_LISTEN"), "0.0.0.0:8081", "CAKE_BROKER_LISTEN")
    eq(env_value(env, "CAKE_BROKER_URL"), f"http://cake-agents-broker.{NAMESPACE}.svc:8081", "CAKE_BROKER_URL (defaults)")
    eq(env_value(env_of(docs_of("istio-shared-gateway")), "CAKE_BROKER_URL"),
       f"http://cake-agents-broker.{NAMESPACE}.svc:8081/agents", "CAKE_BROKER_URL (pathPrefix)")
    dep, _ = control_plane(docs)
    ports = dep["spec"]["template"]["spec"]["containers"][0]["ports"]
    eq([(p["name"], p["containerPort"]) for p in ports], [("http", 8080), ("broker", 8081)], "container ports")
    svc = find(docs, "Service", "cake-agents-broker")
    eq((svc["spec"]["type"], [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]]),
       ("ClusterIP", [("broker", 8081, "broker")]), "broker Service")
    eq(svc["spec"]["selector"], dep["spec"]["selector"]["matchLabels"], "broker Service selector")
    svc = find(render(sets=["controlPlane.service.type=LoadBalancer"]), "Service", "cake-agents-broker")
    eq(svc["spec"]["type"], "ClusterIP", "the broker is never a LoadBalancer")
    # The public routes go to the API's port only.
    ing = find(docs_of("ingress"), "Ingress", "cake-agents")
    eq({p["backend"]["service"]["port"]["name"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]}, {"http"},
       "Ingress backends")


@case("controlPlane.https=false: CAKE_PUBLIC_URL is http")
def _():
    env = env_of(docs_of("external-secrets"))
    eq(env_value(env, "CAKE_PUBLIC_URL"), "http://agents.example.com", "CAKE_PUBLIC_URL")


@case("oidc: CAKE_OIDC_* env, client secret created and referenced (optional)")
def _():
    docs = docs_of("oidc")
    env = env_of(docs)
    eq({n: env_value(env, n) for n in ("CAKE_OIDC_ENABLED", "CAKE_OIDC_PROVIDER_ID", "CAKE_OIDC_ISSUER",
                                       "CAKE_OIDC_CLIENT_ID", "CAKE_OIDC_SCOPES")}, {
        "CAKE_OIDC_ENABLED": "true", "CAKE_OIDC_PROVIDER_ID": "okta",
        "CAKE_OIDC_ISSUER": "https://example.okta.com/oauth2/default", "CAKE_OIDC_CLIENT_ID": "cake-agents",
        "CAKE_OIDC_SCOPES": "openid email profile groups"}, "OIDC env")
    eq(secret_ref(env, "CAKE_OIDC_CLIENT_SECRET"), {"name": "cake-agents-oidc", "key": "client-secret", "optional": True},
       "client secret ref")
    eq(secret_data(find(docs, "Secret", "cake-agents-oidc")), {"client-secret": "oidc-client-secret-value"}, "OIDC Secret")
    eq(env_value(env, "CAKE_ADMIN_EMAILS"), "ada@example.com,grace@example.com", "CAKE_ADMIN_EMAILS")
    eq(env_value(env, "CAKE_EMAIL_AND_PASSWORD_ENABLED"), "true", "email and password")


@case("oidc: a public client (no secret name, create false) gets no CAKE_OIDC_CLIENT_SECRET")
def _():
    env = env_of(render(sets=["oidc.enabled=true", "oidc.issuer=https://id.example.com", "oidc.clientId=cake"]))
    check("CAKE_OIDC_CLIENT_SECRET" not in env, "client secret env set")
    eq(env_value(env, "CAKE_OIDC_SCOPES"), "openid email profile", "default scopes")
    eq(env_value(env, "CAKE_OIDC_PROVIDER_ID"), "oidc", "default provider id")


@case("secrets-existing: every secret referenced by name, none created")
def _():
    docs = docs_of("secrets-existing")
    env = env_of(docs)
    eq([s["metadata"]["name"] for s in find_all(docs, "Secret")], ["cake-agents-postgresql"], "rendered Secrets")
    eq(secret_ref(env, "SLACK_BOT_TOKEN"), {"name": "slack", "key": "bot-token", "optional": True}, "SLACK_BOT_TOKEN")
    eq(secret_ref(env, "SLACK_SIGNING_SECRET"), {"name": "slack", "key": "signing-secret", "optional": True},
       "SLACK_SIGNING_SECRET")
    eq(secret_ref(env, "BETTER_AUTH_SECRET"), {"name": "cake-auth", "key": "secret"}, "BETTER_AUTH_SECRET")
    eq(secret_ref(env, "CAKE_OIDC_CLIENT_SECRET"), {"name": "cake-oidc", "key": "clientSecret", "optional": True},
       "CAKE_OIDC_CLIENT_SECRET")
    _, c = control_plane(docs)
    eq(c["envFrom"], [{"secretRef": {"name": "linear", "optional": True}},
                      {"secretRef": {"name": "litellm", "optional": True}}], "envFrom")


@case("secrets-created: every secret created from values and referenced")
def _():
    docs = docs_of("secrets-created")
    env = env_of(docs)
    secrets = {s["metadata"]["name"]: secret_data(s) for s in find_all(docs, "Secret")}
    eq(secrets.get("cake-agents-linear"), {"LINEAR_API_KEY": "lin_api_example", "LINEAR_WEBHOOK_SECRET": "lin_wh_example"},
       "linear Secret")
    eq(secrets.get("cake-litellm"), {"LITELLM_API_KEY": "sk-litellm-example",
                                     "LITELLM_BASE_URL": "http://litellm.litellm.svc:4000/v1"}, "litellm Secret")
    eq(secrets.get("cake-agents-slack"), {"SLACK_BOT_TOKEN": "xoxb-example", "SLACK_SIGNING_SECRET": "slack-signing-example"},
       "slack Secret")
    eq(secrets.get("cake-agents-better-auth"),
       {"BETTER_AUTH_SECRET": "a-fixed-better-auth-secret-of-at-least-32-chars"}, "better-auth Secret")
    eq(secrets.get("cake-agents-oidc"), {"client-secret": "oidc-secret"}, "OIDC Secret")
    _, c = control_plane(docs)
    eq(c["envFrom"], [{"secretRef": {"name": "cake-agents-linear", "optional": True}},
                      {"secretRef": {"name": "cake-litellm", "optional": True}}], "envFrom")
    eq(secret_ref(env, "SLACK_BOT_TOKEN"), {"name": "cake-agents-slack", "key": "SLACK_BOT_TOKEN", "optional": True},
       "SLACK_BOT_TOKEN")
    eq(secret_ref(env, "SLACK_SIGNING_SECRET"),
       {"name": "cake-agents-slack", "key": "SLACK_SIGNING_SECRET", "optional": True}, "SLACK_SIGNING_SECRET")


@case("secrets-created: changing a secret value changes the Deployment's checksum annotation")
def _():
    def checksum(docs):
        return control_plane(docs)[0]["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
    a = checksum(docs_of("secrets-created"))
    b = checksum(render(values_file("secrets-created"), sets=["slack.secret.botToken=xoxb-rotated"]))
    c = checksum(render(values_file("secrets-created"), sets=["controlPlane.logLevel=debug"]))
    check(a != b, "checksum unchanged after a secret change")
    eq(c, a, "checksum after a non-secret change")


@case("external-secrets: ExternalSecret (v1beta1) fills the PostgreSQL Secret, DATABASE_URL templated")
def _():
    docs = docs_of("external-secrets")
    check(not find_all(docs, "Secret", "cake-agents-postgresql"), "plain PostgreSQL Secret rendered too")
    es = find(docs, "ExternalSecret", "cake-agents-postgresql")
    eq(es["apiVersion"], "external-secrets.io/v1beta1", "apiVersion")
    spec = es["spec"]
    eq(spec["secretStoreRef"], {"name": "aws-secrets-manager", "kind": "ClusterSecretStore"}, "secretStoreRef")
    eq(spec["refreshInterval"], "1h", "refreshInterval")
    eq(spec["target"]["name"], "cake-agents-postgresql", "target name")
    eq(spec["target"]["template"]["engineVersion"], "v2", "template engine")
    eq(spec["target"]["template"]["data"], {
        "POSTGRES_USER": "cake", "POSTGRES_DB": "cake", "POSTGRES_PASSWORD": "{{ .password }}",
        "DATABASE_URL": "postgres://cake:{{ .password | urlquery }}@cake-agents-postgresql.cake-agents.svc.cluster.local"
                        ":5432/cake?sslmode=disable"}, "template data")
    eq(spec["data"], [{"secretKey": "password", "remoteRef": {"key": "cake/dev/postgres", "property": "password"}}], "data")
    sts = find(docs, "StatefulSet")
    vct = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    eq((vct["storageClassName"], vct["resources"]["requests"]["storage"]), ("gp3", "20Gi"), "PVC")
    eq(secret_ref(env_of(docs), "DATABASE_URL"), {"name": "cake-agents-postgresql", "key": "DATABASE_URL"}, "DATABASE_URL")


@case("everything: header auth beyond the seed (claims, trusted proxies, JWKS)")
def _():
    env = env_of(docs_of("everything"))
    got = {n: env_value(env, n) for n in ["CAKE_HEADER_AUTH_ENABLED"] + HEADER_AUTH_ENV}
    eq(got, {
        "CAKE_HEADER_AUTH_ENABLED": "true",
        "CAKE_HEADER_AUTH_EMAIL_HEADER": "x-forwarded-email",
        "CAKE_HEADER_AUTH_EMAIL_CLAIM": "upn",
        "CAKE_HEADER_AUTH_JWT_HEADER": "x-forwarded-access-token",
        "CAKE_HEADER_AUTH_USER": "x-forwarded-user",
        "CAKE_HEADER_AUTH_USER_CLAIM": "preferred_username",
        "CAKE_HEADER_AUTH_TRUSTED_PROXIES": "10.0.0.0/8,fd00::/8",
        "CAKE_HEADER_AUTH_JWKS_URL": "https://sso.example.com/.well-known/jwks.json",
        "CAKE_HEADER_AUTH_JWT_ISSUER": "https://sso.example.com",
        "CAKE_HEADER_AUTH_JWT_AUDIENCE": "cake-agents",
    }, "header auth env")
    eq(env_value(env, "CAKE_TRUSTED_PROXIES"), "10.42.0.0/16", "client-address proxies")


@case("everything: S3, admins, email+password off, path prefix, extra env, pull policy")
def _():
    docs = docs_of("everything")
    env = env_of(docs)
    eq({n: env_value(env, n) for n in ("CAKE_S3_ENABLED", "CAKE_S3_BUCKET", "CAKE_S3_REGION", "CAKE_S3_PREFIX")},
       {"CAKE_S3_ENABLED": "true", "CAKE_S3_BUCKET": "cake-artifacts", "CAKE_S3_REGION": "eu-west-1",
        "CAKE_S3_PREFIX": "sessions/"}, "S3 env")
    eq(env_value(env, "CAKE_ADMIN_EMAILS"), "root@example.com", "CAKE_ADMIN_EMAILS")
    eq(env_value(env, "CAKE_EMAIL_AND_PASSWORD_ENABLED"), "false", "CAKE_EMAIL_AND_PASSWORD_ENABLED")
    eq(env_value(env, "CAKE_PATH_PREFIX"), "/tools/agents", "CAKE_PATH_PREFIX")
    eq(env_value(env, "CAKE_PUBLIC_URL"), "https://agents.example.com/tools/agents", "CAKE_PUBLIC_URL")
    eq(env_value(env, "CAKE_LOG"), "debug", "CAKE_LOG")
    eq(env_value(env, "CAKE_OPENCODE_START_TIMEOUT"), "120", "extraEnv")
    eq(env_value(env, "CAKE_DATA_PLANE_IMAGE_PULL_POLICY"), "Always", "pull policy")
    dep, c = control_plane(docs)
    eq(dep["metadata"]["name"], "cake", "fullnameOverride")
    eq(dep["spec"]["replicas"], 2, "replicas")
    eq(c["envFrom"][2:], [{"secretRef": {"name": "extra-cake-env"}}], "extraEnvFrom")
    spec = dep["spec"]["template"]["spec"]
    eq(spec["imagePullSecrets"], [{"name": "regcred"}], "imagePullSecrets")
    eq(spec["nodeSelector"], {"kubernetes.io/os": "linux"}, "nodeSelector")
    eq(dep["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/scrape"), "true", "podAnnotations")
    sa = find(docs, "ServiceAccount", "cake")
    eq(sa["metadata"]["annotations"], {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/cake-agents"},
       "SA annotations")
    eq(find(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["image"],
       "docker.io/postgres:17.6-bookworm", "postgresql.image.registry overrides registry.default")


@case("registry.default prefixes the embedded PostgreSQL image too")
def _():
    sts = find(render(sets=["registry.default=mirror.example.com"]), "StatefulSet")
    eq(sts["spec"]["template"]["spec"]["containers"][0]["image"], "mirror.example.com/postgres:17.6-bookworm", "image")


@case("release name and namespace flow into names, CAKE_INSTANCE and selectors")
def _():
    docs = render(release="prod", namespace="agents")
    dep, _ = control_plane(docs)
    eq(dep["metadata"]["name"], "prod-cake-agents", "Deployment name")
    env = env_of(docs)
    eq(env_value(env, "CAKE_INSTANCE"), "prod", "CAKE_INSTANCE")
    eq(env_value(env, "CAKE_SESSION_NAMESPACE"), "agents", "CAKE_SESSION_NAMESPACE")
    pol = find(docs, "NetworkPolicy")
    eq(pol["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"], "prod", "policy instance")
    eq(pol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "agents",
       "policy namespaceSelector")
    rb = find(docs, "RoleBinding", "prod-cake-agents-sessions")
    eq(rb["subjects"], [{"kind": "ServiceAccount", "name": "prod-cake-agents", "namespace": "agents"}], "subjects")
    data = secret_data(find(docs, "Secret", "prod-cake-agents-postgresql"))
    check("@prod-cake-agents-postgresql.agents.svc.cluster.local:5432/" in data["DATABASE_URL"], "DATABASE_URL host")


# --------------------------------------------------------------------------------------------
# Values that must be refused


# Refused by values.schema.json: helm template and helm lint --strict both fail.
INVALID_SCHEMA = {
    "typo-header-auth": "Additional property enbled is not allowed",
    "typo-nested": "Additional property pullpolicy is not allowed",
    "wrong-type": "adminEmails: Invalid type",
}
# Refused by the chart's own checks (`fail` in _helpers.tpl): helm template fails with the
# message. helm lint only reports it ("[INFO] Fail: ..."): Helm's lint mode never fails on `fail`.
INVALID_COMBINATION = {
    "both-databases": "set postgresql.enabled=false",
    "no-database": "no database",
    "header-auth-without-headers": "headerAuth.jwt.header or headerAuth.email.header",
    "session-namespace-create-without-name": "sessionNamespace.create needs sessionNamespace.name",
    "oidc-without-issuer": "oidc.issuer is required",
    "istio-without-host": "controlPlane.host is required",
}


def invalid_case(name, expected, by_schema):
    path = INVALID_DIR / f"{name}.yaml"
    title = "helm template and helm lint --strict fail" if by_schema else "helm template fails, helm lint reports it"

    @case(f"rejected: {name} ({title})")
    def _():
        r = helm_template(path)
        check(r.returncode != 0, "helm template succeeded")
        check(expected in r.stderr, f"helm template error lacks {expected!r}: {r.stderr.strip()[-600:]}")
        r = run([HELM, "lint", "--strict", str(CHART), "-f", str(path)])
        if by_schema:
            check(r.returncode != 0, "helm lint succeeded")
        else:
            check(expected in r.stdout + r.stderr, f"helm lint does not report {expected!r}")


for _name, _expected in INVALID_SCHEMA.items():
    invalid_case(_name, _expected, True)
for _name, _expected in INVALID_COMBINATION.items():
    invalid_case(_name, _expected, False)


@case("tests/invalid/: every file has its expected error listed here")
def _():
    eq(sorted(p.stem for p in INVALID_DIR.glob("*.yaml")), sorted(set(INVALID_SCHEMA) | set(INVALID_COMBINATION)),
       "files in tests/invalid/")
    eq(sorted(p.stem for p in VALUES_DIR.glob("*.yaml")), sorted(n for n in MATRIX if n != "defaults"),
       "files in tests/values/ (each must be in MATRIX)")


@case("rejected: --set headerAuth.enbled=true and typos at every level")
def _():
    for bad in ("headerAuth.enbled=true", "controlPlane.hots=x", "registry.defualt=x", "postgresql.auth.passwd=x",
                "istio.gateway.nmae=x", "slack.secret.keys.bot=x", "unknownTopLevel=1"):
        r = helm_template(sets=[bad])
        check(r.returncode != 0 and "Additional property" in r.stderr, f"--set {bad} was accepted")


@case("rejected: malformed values (pathPrefix, pull policy, existingSecretEnv name, short betterAuth value)")
def _():
    for bad in (["pathPrefix=agents"], ["pathPrefix=/agents/"], ["dataPlane.image.pullPolicy=Sometimes"],
                ["betterAuth.secret.value=short"], ["headerAuth.trustedProxies[0]=not a cidr"],
                ["dataPlane.volumeSizeLimits.workspace=lots"], ["dataPlane.volumeSizeLimits.data=1Gi"],
                ["dataPlane.pendingGraceSeconds=-1"], ["networkPolicy.egress.clusterCidrs[0]=10.0.0.0"],
                ["controlPlane.deployment.strategy.type=BlueGreen"]):
        r = helm_template(sets=bad)
        check(r.returncode != 0, f"--set {bad} was accepted")
    r = helm_template(set_json=['externalDatabase.existingSecretEnv={"PGHOST":"h","MYSQL_HOST":"x"}'],
                      sets=["postgresql.enabled=false", "externalDatabase.existingSecret=db"])
    check(r.returncode != 0, "existingSecretEnv accepted MYSQL_HOST")


# --------------------------------------------------------------------------------------------
# Chart metadata, schema, README, packaging


def flatten(values, prefix=""):
    """Leaf paths of a values tree (empty maps and lists count as leaves)."""
    out = {}
    for k, v in values.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, path + "."))
        else:
            out[path] = v
    return out


@case("Chart.yaml: apiVersion v2, appVersion, no dependencies")
def _():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    eq(chart["apiVersion"], "v2", "apiVersion")
    eq(chart["name"], "cake-agents", "name")
    eq(chart["appVersion"], APP_VERSION, "appVersion")
    check(not chart.get("dependencies"), "dependencies present")
    check(not (CHART / "Chart.lock").exists() and not (CHART / "charts").exists(), "vendored dependencies")


@case("every value seed 001 names is accepted, with the seed's defaults")
def _():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for path, default in SEED_VALUES.items():
        node = defaults
        for part in path.split("."):
            check(isinstance(node, dict) and part in node, f"{path} missing from values.yaml")
            node = node[part]
        if default is not None:
            eq(node, default, f"default of {path}")
    # and each can be set without the schema objecting
    sets = ["registry.default=r.example.com", "controlPlane.host=h.example.com", "controlPlane.image.tag=t",
            "dataPlane.image.tag=t", "dataPlaneInit.image.tag=t", "sessionNamespace.name=s", "sessionNamespace.create=true",
            "istio.enabled=true", "istio.gateway.name=gw", "linear.secret.create=false", "linear.secret.name=l",
            "litellm.secret.create=false", "litellm.secret.name=l", "slack.secret.create=false", "slack.secret.name=s",
            "betterAuth.secret.create=false", "betterAuth.secret.name=b", "headerAuth.enabled=true",
            "headerAuth.email.header=e", "headerAuth.email.claim=c", "headerAuth.jwt.header=j",
            "headerAuth.user.header=u", "headerAuth.user.claim=n", "postgresql.enabled=false",
            "externalDatabase.existingSecret=db", "externalDatabase.existingSecretKey=url"]
    render(sets=sets)


@case("values.schema.json: additionalProperties false on every object with properties")
def _():
    schema = json.loads((CHART / "values.schema.json").read_text())
    problems = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object":
            if "properties" in node or "patternProperties" in node:
                if node.get("additionalProperties") is not False:
                    problems.append(path or "<root>")
            elif not (isinstance(node.get("additionalProperties"), dict) or "description" in node):
                problems.append(f"{path} (free-form object without a description)")
        for key in ("properties", "patternProperties"):
            for k, v in node.get(key, {}).items():
                walk(v, f"{path}.{k}" if path else k)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}[]")
        for alt in node.get("oneOf", []):
            walk(alt, path)
    walk(schema, "")
    check(not problems, f"open objects: {problems}")
    # every default value is described by the schema
    defaults = flatten(yaml.safe_load((CHART / "values.yaml").read_text()))
    for path in defaults:
        node = schema
        for part in path.split("."):
            node = node.get("properties", {}).get(part)
            check(node is not None, f"{path} not in the schema")
            if node.get("type") == "object" and "properties" not in node:
                break


@case("README.md documents every value (table) and the required sections")
def _():
    readme = (CHART / "README.md").read_text()
    values_table = readme.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.\-]+)` \|", values_table, re.M))

    def as_documented(path):  # objects documented as a whole (resources, securityContext, ...)
        parts = path.split(".")
        for i, part in enumerate(parts):
            if part in ("resources", "podSecurityContext", "securityContext", "selector"):
                return ".".join(parts[:i + 1])
        return path
    defaults = {as_documented(p) for p in flatten(yaml.safe_load((CHART / "values.yaml").read_text()))}
    missing = sorted(p for p in defaults if p not in documented)
    check(not missing, f"values missing from README's table: {missing}")
    stale = sorted(p for p in documented if p not in defaults)
    check(not stale, f"README documents values that do not exist: {stale}")
    for section in ("Database", "Header auth", "OIDC", "Session namespace", "Istio", "Ingress", "Secrets",
                    "Replicas and upgrades", "Session egress"):
        check(re.search(rf"^#+ .*{section}", readme, re.M | re.I), f"no section on {section}")


@case("helm dependency build is a no-op offline")
def _():
    with tempfile.TemporaryDirectory() as tmp:
        env = helm_env(Path(tmp) / "kubeconfig")
        r = run([HELM, "dependency", "build", str(CHART)], env=env)
        check(r.returncode == 0, f"rc={r.returncode}: {r.stderr.strip()}")
        check(not (CHART / "charts").exists(), "charts/ created")


@case("helm package: the packaged chart leaves out tests/")
def _():
    with tempfile.TemporaryDirectory() as tmp:
        r = run([HELM, "package", str(CHART), "--destination", tmp], env=helm_env(Path(tmp) / "kubeconfig"))
        check(r.returncode == 0, r.stderr.strip())
        with tarfile.open(next(Path(tmp).glob("*.tgz"))) as tgz:
            names = tgz.getnames()
    check("cake-agents/values.schema.json" in names and "cake-agents/README.md" in names, f"contents: {names}")
    check(not [n for n in names if n.startswith("cake-agents/tests/")], "tests/ packaged")


@case("lookup: generated secrets keep their values on upgrade (fake API server)")
def _():
    meta = lambda name: {"name": name, "namespace": NAMESPACE}
    b64 = lambda s: base64.b64encode(s.encode()).decode()
    existing = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("cake-agents-better-auth"), "type": "Opaque",
         "data": {"BETTER_AUTH_SECRET": b64("kept-better-auth-secret-" + "x" * 40)}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta("cake-agents-postgresql"), "type": "Opaque",
         "data": {"POSTGRES_PASSWORD": b64("keptPassword123")}},
    ]
    with FakeKube(existing) as kube:
        r = run([HELM, "template", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=server"], env=helm_env(kube.kubeconfig))
        check(r.returncode == 0, r.stderr.strip()[-1000:])
        check("/api/v1/namespaces/cake-agents/secrets/cake-agents-better-auth" in kube.requests, "no lookup made")
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    eq(secret_data(find(docs, "Secret", "cake-agents-better-auth"))["BETTER_AUTH_SECRET"],
       "kept-better-auth-secret-" + "x" * 40, "BETTER_AUTH_SECRET")
    pg = secret_data(find(docs, "Secret", "cake-agents-postgresql"))
    eq(pg["POSTGRES_PASSWORD"], "keptPassword123", "POSTGRES_PASSWORD")
    check(":keptPassword123@" in pg["DATABASE_URL"], "DATABASE_URL not rebuilt from the kept password")
    a = secret_data(find(render(), "Secret", "cake-agents-better-auth"))["BETTER_AUTH_SECRET"]
    b = secret_data(find(render(extra=["--set", "controlPlane.logLevel=info"]), "Secret",
                         "cake-agents-better-auth"))["BETTER_AUTH_SECRET"]
    check(a != b, "without a cluster every render should generate a new secret")


def notes(values=None, sets=()):
    with FakeKube() as kube:
        cmd = [HELM, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client",
               "--disable-openapi-validation"] + (["-f", str(values)] if values else [])
        for s in sets:
            cmd += ["--set", s]
        r = run(cmd, env=helm_env(kube.kubeconfig))
    check(r.returncode == 0, r.stderr.strip()[-1000:])
    check("\nNOTES:\n" in r.stdout, "no NOTES in the dry-run output")
    return r.stdout.split("\nNOTES:\n", 1)[1]


@case("NOTES.txt: defaults tell port-forward and the seed's verification steps")
def _():
    text = notes()
    for line in ("kubectl port-forward -n cake-agents svc/cake-agents 8080:80", "helm status cake-agents -n cake-agents",
                 "kubectl get pods -n cake-agents", "kubectl get secret -n cake-agents",
                 "creating a session produces a data-plane pod in namespace \"cake-agents\"",
                 "app.kubernetes.io/component=data-plane,app.kubernetes.io/instance=cake-agents"):
        check(line in text, f"NOTES lack {line!r}")


@case("NOTES.txt: several replicas are explained; one is not")
def _():
    check("replicas" not in notes().lower(), "a note about replicas with one replica")
    text = notes(sets=["controlPlane.deployment.replicas=2"])
    check("2 control plane replicas share every session" in text and "cake-agents-reconciler" in text,
          f"no note about 2 replicas: {text[-800:]}")


@case("NOTES.txt: with Istio and a session namespace it points at the URL and that namespace")
def _():
    text = notes(values_file("istio-shared-gateway"), sets=["sessionNamespace.name=cake-agents-sessions"])
    for line in ("https://agents.example.com/agents/", "istio-system/shared-gateway",
                 "kubectl get pods -n cake-agents-sessions", "helm status cake-agents -n cake-agents"):
        check(line in text, f"NOTES lack {line!r}")


# --------------------------------------------------------------------------------------------
# Dockerfiles (static: there is no Docker engine here)


def parse_dockerfile(name):
    path = DOCKER / name
    check(path.exists(), f"{path} missing")
    parser = DockerfileParser(path=str(path))
    stages, current = [], None
    for ins in parser.structure:
        if ins["instruction"] == "FROM":
            current = {"from": ins["value"], "instructions": []}
            stages.append(current)
        elif current is not None and ins["instruction"] != "COMMENT":
            current["instructions"].append((ins["instruction"], ins["value"]))
    return parser, stages


def image_pinned(ref):
    ref = ref.split()[0]
    if "@sha256:" in ref:
        return True
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return tag != "latest" and bool(re.search(r"\d", tag))


def final_user(stage):
    users = [v for i, v in stage["instructions"] if i == "USER"]
    return users[-1] if users else None


def dockerfile_cases(name, multistage, port):
    """The checks shared by the two images that serve a port."""
    @case(f"docker/{name}: FROM pinned, USER non-root, EXPOSE {port}, no remote ADD")
    def _():
        parser, stages = parse_dockerfile(name)
        check(stages, "no FROM")
        aliases = set()
        for st in stages:
            words = st["from"].split()
            ref = words[0]
            check(ref in aliases or image_pinned(ref), f"FROM {ref} is not pinned to a version tag")
            if len(words) == 3 and words[1].upper() == "AS":
                aliases.add(words[2])
        if multistage:
            check(len(stages) >= 2 and parser.is_multistage, "not multi-stage")
        final = stages[-1]
        user = final_user(final)
        check(user is not None, "final stage has no USER")
        uid = user.split(":")[0]
        check(re.fullmatch(r"\d+", uid) and int(uid) != 0, f"USER {user} is not a non-root numeric uid")
        exposed = [v for i, v in final["instructions"] if i == "EXPOSE"]
        eq(exposed, [str(port)], "EXPOSE")
        for st in stages:
            for ins, value in st["instructions"]:
                check(not (ins == "ADD" and re.search(r"(https?|git)://", value)), f"remote ADD: {value}")
                check(ins != "ADD", f"ADD used (prefer COPY): {value}")
        first = (DOCKER / name).read_text().splitlines()[0]
        check(re.fullmatch(r"# syntax=docker/dockerfile:\d+\.\d+", first), f"syntax directive not pinned: {first}")


dockerfile_cases("web.Dockerfile", True, 8080)
dockerfile_cases("data-plane.Dockerfile", True, 4096)


@case("docker/data-plane-init.Dockerfile: FROM pinned, USER non-root, no EXPOSE, no remote ADD")
def _():
    parser, stages = parse_dockerfile("data-plane-init.Dockerfile")
    for st in stages:
        check(image_pinned(st["from"]), f"FROM {st['from']} is not pinned")
    final = stages[-1]
    eq(final_user(final), "1000:1000", "USER")
    check(not [v for i, v in final["instructions"] if i == "EXPOSE"], "EXPOSE in the init image")
    check(not [v for st in stages for i, v in st["instructions"] if i == "ADD"], "ADD used")


@case("docker/web.Dockerfile: cargo build --release --locked -p cake-server, ENTRYPOINT cake, CMD serve, CAKE_LISTEN")
def _():
    parser, stages = parse_dockerfile("web.Dockerfile")
    builder, final = stages[0], stages[-1]
    check(builder["from"].startswith("rust:1.95-slim-bookworm"), f"builder FROM {builder['from']}")
    runs = " ".join(v for i, v in builder["instructions"] if i == "RUN")
    check("cargo build --release --locked -p cake-server" in runs, "no cargo build --release --locked -p cake-server")
    copies = [v for i, v in final["instructions"] if i == "COPY"]
    check(any(v.startswith("--from=builder") and v.endswith("/usr/local/bin/cake") for v in copies), f"COPY: {copies}")
    eq(json.loads(dict(final["instructions"])["ENTRYPOINT"]), ["/usr/local/bin/cake"], "ENTRYPOINT")
    eq(json.loads(dict(final["instructions"])["CMD"]), ["serve"], "CMD")
    eq(parser.envs.get("CAKE_LISTEN"), "0.0.0.0:8080", "CAKE_LISTEN")
    eq(parser.envs.get("CAKE_DATA_DIR"), "/var/lib/cake", "CAKE_DATA_DIR")
    check(re.match(r"(gcr\.io/distroless/cc-debian12|debian:12)", final["from"]), f"runtime base {final['from']}")
    # the chart's pod securityContext runs as the image's user
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    psc = values["controlPlane"]["deployment"]["podSecurityContext"]
    eq(final_user(final), f"{psc['runAsUser']}:{psc['runAsGroup']}", "USER vs the chart's runAsUser")


@case("docker/data-plane.Dockerfile: opencode-ai@1.18.33, tools, cake binary, uid 1000, /workspace, no entrypoint")
def _():
    parser, stages = parse_dockerfile("data-plane.Dockerfile")
    builder, final = stages[0], stages[-1]
    check(final["from"].startswith("node:"), f"final FROM {final['from']}")
    text = (DOCKER / "data-plane.Dockerfile").read_text()
    versions = re.findall(r"opencode-ai@(\S+)", text)
    eq(versions, [OPENCODE_VERSION], "opencode-ai versions installed")
    check("npm install -g" in text, "opencode-ai not installed globally")
    setup = (ROOT / "script" / "setup").read_text()
    check(f"OPENCODE_VERSION={OPENCODE_VERSION}" in setup, "script/setup pins another OpenCode version")
    runs = " ".join(v for i, v in final["instructions"] if i == "RUN")
    for pkg in ("git", "build-essential", "python3", "ripgrep", "curl", "ca-certificates", "openssh-client"):
        check(re.search(rf"\b{re.escape(pkg)}\b", runs), f"{pkg} not installed")
    check("cargo build --release --locked -p cake-server" in " ".join(v for i, v in builder["instructions"]),
          "builder does not build cake")
    copies = [v for i, v in final["instructions"] if i == "COPY"]
    check(any(v.startswith("--from=builder") and v.endswith("/usr/local/bin/cake") for v in copies), f"COPY: {copies}")
    eq(final_user(final), "1000:1000", "USER")
    eq(parser.envs.get("HOME"), "/home/cake", "HOME")
    eq([v for i, v in final["instructions"] if i == "WORKDIR"][-1], "/workspace", "WORKDIR")
    eq(json.loads(dict(final["instructions"]).get("ENTRYPOINT", "[]")), [], "ENTRYPOINT (must be reset)")
    eq(json.loads(dict(final["instructions"])["CMD"]),
       ["opencode", "serve", "--hostname", "0.0.0.0", "--port", "4096"], "CMD")
    check("git-credential" in text, "no note on cake git-credential")


@case("docker/data-plane-init.Dockerfile: git, init.sh copied and run as entrypoint, HOME, /workspace")
def _():
    parser, stages = parse_dockerfile("data-plane-init.Dockerfile")
    final = stages[-1]
    runs = " ".join(v for i, v in final["instructions"] if i == "RUN")
    check(re.search(r"\bgit\b", runs), "git not installed")
    copies = [v for i, v in final["instructions"] if i == "COPY"]
    check(any("docker/data-plane-init/init.sh" in v for v in copies), f"init.sh not copied: {copies}")
    for v in copies:
        src = [w for w in v.split() if not w.startswith("--")][0]
        check((ROOT / src).exists(), f"COPY source {src} missing")
    eq(json.loads(dict(final["instructions"])["ENTRYPOINT"]), ["/usr/local/bin/cake-data-plane-init"], "ENTRYPOINT")
    eq(parser.envs.get("HOME"), "/home/cake", "HOME")


@case("docker/data-plane-init/init.sh: sh -n, bash -n, executable")
def _():
    script = DOCKER / "data-plane-init" / "init.sh"
    check(os.access(script, os.X_OK), "not executable")
    check(script.read_text().startswith("#!/bin/sh\n"), "not a /bin/sh script")
    for shell in ("sh", "bash"):
        r = run([shell, "-n", str(script)])
        check(r.returncode == 0, f"{shell} -n: {r.stderr.strip()}")


@case("docker/data-plane-init/init.sh: writes git config and clones CAKE_GIT_REPOSITORY (local repo)")
def _():
    script = DOCKER / "data-plane-init" / "init.sh"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        genv = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp / "seedhome"),
                    GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
                    GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
        for cmd in (["git", "init", "-q", "-b", "trunk", str(tmp / "src")],
                    ["git", "-C", str(tmp / "src"), "commit", "-q", "--allow-empty", "-m", "first"]):
            r = run(cmd, env=genv)
            check(r.returncode == 0, f"{cmd}: {r.stderr}")
        env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp / "home"), CAKE_WORKSPACE=str(tmp / "ws"),
                   CAKE_GIT_USER_NAME="Ada Lovelace", CAKE_GIT_USER_EMAIL="ada@example.com",
                   CAKE_GIT_REPOSITORY=str(tmp / "src"), CAKE_GIT_REF="trunk")
        r = run(["sh", str(script)], env=env)
        check(r.returncode == 0, f"init.sh failed: {r.stderr.strip()}")
        cfg = lambda key: run(["git", "config", "--global", key], env=env).stdout.strip()
        eq(cfg("user.name"), "Ada Lovelace", "user.name")
        eq(cfg("user.email"), "ada@example.com", "user.email")
        eq(cfg("credential.helper"), "/usr/local/bin/cake git-credential", "credential.helper")
        log = run(["git", "-C", str(tmp / "ws"), "log", "--format=%s"], env=env)
        eq(log.stdout.strip(), "first", "cloned history")
        r = run(["sh", str(script)], env=env)  # a restarted pod: idempotent
        check(r.returncode == 0 and "not cloning again" in r.stderr, f"second run: {r.stderr.strip()}")
        env2 = dict(env, CAKE_WORKSPACE=str(tmp / "ws2"))
        del env2["CAKE_GIT_REPOSITORY"]
        r = run(["sh", str(script)], env=env2)
        check(r.returncode == 0 and (tmp / "ws2" / ".git").is_dir(), "no empty repository without CAKE_GIT_REPOSITORY")


@case(".dockerignore excludes target/, .tools/, .cake/, node_modules/, .git")
def _():
    lines = {l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")}
    for entry in ("target/", ".tools/", ".cake/", "node_modules/", ".git"):
        check(entry in lines, f"{entry} not ignored")
    for needed in ("docker/", ".sqlx", ".cargo", "Cargo.lock"):
        check(needed not in lines and needed + "/" not in lines, f"{needed} must stay in the build context")


@case("kubernetes-validate itself rejects a bad manifest (guards against a silent validator)")
def _():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "tmplate": {}}}
    r = subprocess.run([KUBERNETES_VALIDATE, "--strict", "--quiet", "-k", K8S_VERSION, "-"],
                       input=yaml.safe_dump(bad), capture_output=True, text=True, timeout=TIMEOUT)
    check(r.returncode != 0, "a Deployment with a typo'd field passed validation")


# --------------------------------------------------------------------------------------------


def main():
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    for tool in (HELM, KUBERNETES_VALIDATE):
        if not os.access(tool, os.X_OK):
            print(f"not ok - tools: {tool} missing (run script/setup)")
            print("chart: 0 passed, 1 failed")
            return 1
    passed = failed = 0
    for name, fn in CASES:
        if only and only not in name:
            continue
        try:
            fn()
        except Failure as e:
            failed += 1
            reason = str(e)
            print(f"not ok - {name}: {reason if len(reason) <= 600 else reason[:600] + ' …'}")
        except Exception as e:  # a bug in the test or an unexpected rendering
            failed += 1
            detail = traceback.format_exception_only(type(e), e)[-1].strip()
            print(f"not ok - {name}: {detail}")
        else:
            passed += 1
            print(f"ok - {name}")
        sys.stdout.flush()
    print(f"chart: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
