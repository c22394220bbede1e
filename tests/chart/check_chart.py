#!/usr/bin/env python3
"""Offline checks of the jobsched Helm chart and the packaging files around it.

Uses real tools, no cluster and no `helm` binary: Helm's own Go library (through
helm-python-sdk) renders, lints and schema-checks the chart; kubernetes-validate checks every
rendered manifest, in strict mode, against the Kubernetes OpenAPI schemas; the SchedulerConfig
objects are checked against the openAPIV3Schema of the chart's CRD.

    make chart-check                    # creates .venv-chart and runs this
    JOBSCHED_BIN=target/release/jobsched make chart-check   # also compares `jobsched crd`

Exits non-zero on any failure and ends with `N passed, N failed`.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import jsonschema
import celpy
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/jobsched"
HERE = ROOT / "tests/chart"
RELEASE = "demo"
NAMESPACE = "jobsched"
# Oldest Kubernetes the manifests are checked against, and the newest the validator knows.
KUBE_VERSIONS = ["1.32.0", kubernetes_validate.utils.latest_version()]
LINT_KUBE_VERSION = "v1.32.0"
APP_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
CHART_APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")
# Workloads that run to completion: no probes, no selector.
ONE_SHOT_KINDS = ("Job", "CronJob", "Pod")


# ------------------------------------------------------------------------------ bookkeeping


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {name}")
        else:
            self.failed += 1
            msg = f"{name}: {detail}" if detail else name
            self.failures.append(msg)
            print(f"  FAIL  {msg}")
        return ok

    def note(self, text: str) -> None:
        print(f"  note  {text}")

    def section(self, title: str) -> None:
        print(f"\n== {title}")

    def sections(self, group: str, parts) -> None:
        """Run each (title, fn) of `parts` as its own section; a crash in one is its failure, not a traceback that stops the rest."""
        for title, fn in parts:
            self.section(f"{group}: {title}")
            try:
                fn()
            except Exception as e:
                import traceback
                traceback.print_exc()
                self.check(f"{group}: {title}: assertions ran", False, f"{type(e).__name__}: {e}")


R = Report()


def load_yaml(path: pathlib.Path) -> Any:
    return yaml.safe_load(path.read_text())


def kn(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ------------------------------------------------------------------------------ rendering


SCENARIOS: dict[str, dict] = {
    "default": {},
    "all-on": load_yaml(HERE / "values-all-on.yaml"),
    "external": load_yaml(HERE / "values-external.yaml"),
    "external-url": load_yaml(HERE / "values-external-url.yaml"),
    "kind": load_yaml(ROOT / "deploy/kind/values-kind.yaml"),
}


def render(values: dict, **opts: Any) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True, **opts)


def documents(manifests: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__source__", path)
                docs.append(doc)
    return docs


def strip_meta(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__source__"}


def merged_values(values: dict) -> dict:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.merge_values(values)


# ------------------------------------------------------------------------------ CRD schema


def openapi_to_jsonschema(node: Any, strict_objects: bool = True) -> Any:
    """Convert a Kubernetes structural (OpenAPI v3.0) schema to JSON Schema 2020-12.

    Objects with `properties` and no `additionalProperties` reject unknown fields, as a
    `kubectl apply` with (default) strict field validation does.
    """
    if isinstance(node, list):
        return [openapi_to_jsonschema(n, strict_objects) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {k: openapi_to_jsonschema(v, strict_objects) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = openapi_to_jsonschema(value, strict_objects) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [openapi_to_jsonschema(v, strict_objects) for v in value]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "exclusiveMinimum", "exclusiveMaximum"):
            continue
        else:
            out[key] = value
    if node.get("exclusiveMinimum") is True and "minimum" in out:
        out["exclusiveMinimum"] = out.pop("minimum")
    elif isinstance(node.get("exclusiveMinimum"), (int, float)) and not isinstance(node.get("exclusiveMinimum"), bool):
        out["exclusiveMinimum"] = node["exclusiveMinimum"]
    if node.get("exclusiveMaximum") is True and "maximum" in out:
        out["exclusiveMaximum"] = out.pop("maximum")
    elif isinstance(node.get("exclusiveMaximum"), (int, float)) and not isinstance(node.get("exclusiveMaximum"), bool):
        out["exclusiveMaximum"] = node["exclusiveMaximum"]
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = types + ["null"]
    if (
        strict_objects
        and out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


class CRD:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        spec = doc["spec"]
        self.group = spec["group"]
        self.kind = spec["names"]["kind"]
        self.versions = {v["name"]: v for v in spec["versions"]}

    def validator(self, api_version: str) -> jsonschema.protocols.Validator:
        group, _, version = api_version.partition("/")
        if group != self.group or version not in self.versions:
            raise ValueError(f"{api_version} is not served by the CRD (group {self.group}, versions {sorted(self.versions)})")
        v = self.versions[version]
        if not v.get("served", False):
            raise ValueError(f"{api_version} is not served")
        schema = openapi_to_jsonschema(v["schema"]["openAPIV3Schema"])
        # apiVersion, kind and metadata are implicit in every CRD schema.
        props = schema.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props["metadata"] = {"type": "object"}
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        return jsonschema.Draft202012Validator(schema)


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def validate_custom_object(doc: dict, crd: CRD) -> list[str]:
    errors = []
    if doc.get("kind") != crd.kind:
        errors.append(f"kind {doc.get('kind')} != {crd.kind}")
    name = doc.get("metadata", {}).get("name", "")
    if not (DNS_SUBDOMAIN.match(name) and len(name) <= 253):
        errors.append(f"metadata.name {name!r} is not a DNS subdomain")
    try:
        validator = crd.validator(doc.get("apiVersion", ""))
    except ValueError as e:
        return errors + [str(e)]
    for err in sorted(validator.iter_errors(strip_meta(doc)), key=lambda e: list(e.path)):
        errors.append(f"{'.'.join(str(p) for p in err.path) or '<root>'}: {err.message}")
    return errors


# ------------------------------------------------------------------------------ per-manifest checks


def cel_errors(obj: dict, crd: CRD, version: str = "v1alpha1") -> list[str]:
    """Evaluate the CRD's `x-kubernetes-validations` rules on `obj` as the API server does: each
    rule at its schema node with `self` the value there, values typed by the schema (a JSON 5
    under `type: number` is the double 5.0). Returns the messages of the rules that fail."""
    errors: list[str] = []

    def typed(value: Any, node: dict) -> Any:
        kind = node.get("type")
        if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind == "object" and isinstance(value, dict):
            props = node.get("properties", {})
            return {k: typed(v, props.get(k, {})) for k, v in value.items()}
        if kind == "array" and isinstance(value, list):
            return [typed(v, node.get("items", {})) for v in value]
        return value

    def walk(value: Any, node: dict, path: str) -> None:
        for r in node.get("x-kubernetes-validations", []):
            env = celpy.Environment()
            try:
                ok = bool(env.program(env.compile(r["rule"])).evaluate({"self": celpy.json_to_cel(typed(value, node))}))
            except celpy.CELEvalError as e:
                errors.append(f"{path}: rule {r['rule']!r} could not be evaluated: {e}")
                continue
            if not ok:
                errors.append(f"{path}{r.get('fieldPath', '')}: {r['message']}")
        if isinstance(value, dict):
            for k, v in value.items():
                if k in node.get("properties", {}):
                    walk(v, node["properties"][k], f"{path}.{k}")
        elif isinstance(value, list) and "items" in node:
            for i, v in enumerate(value):
                walk(v, node["items"], f"{path}[{i}]")

    walk(obj, crd.versions[version]["schema"]["openAPIV3Schema"], "")
    return errors


def kube_validate(doc: dict, crd: CRD, scenario: str, skipped: set[str]) -> None:
    body = strip_meta(doc)
    kind = doc.get("kind")
    if kind == crd.kind:
        errors = validate_custom_object(body, crd)
        R.check(f"[{scenario}] {kn(doc)} matches the SchedulerConfig CRD schema", not errors, "; ".join(errors))
        cel = cel_errors(body, crd)
        R.check(f"[{scenario}] {kn(doc)} passes the CRD's CEL rules", not cel, "; ".join(cel))
        return
    if kind == "ServiceMonitor":
        if "ServiceMonitor" not in skipped:
            R.note(
                f"[{scenario}] ServiceMonitor (monitoring.coreos.com/v1) is a Prometheus Operator CRD; "
                "no schema here, skipped (structure checked below)"
            )
            skipped.add("ServiceMonitor")
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(body, version, strict=True)
            R.check(f"[{scenario}] {kn(doc)} valid (strict) for Kubernetes {version}", True)
        except ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            R.check(f"[{scenario}] {kn(doc)} valid (strict) for Kubernetes {version}", False, f"{path}: {e.message}")
        except SchemaNotFoundError as e:
            R.check(f"[{scenario}] {kn(doc)} has a Kubernetes {version} schema", False, e.message)


def pod_spec(doc: dict) -> dict | None:
    kind = doc.get("kind")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if kind == "Pod":
        return doc["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(workload, container) for every container and init container of every workload."""
    for w in docs:
        if w["kind"] in WORKLOAD_KINDS:
            spec = pod_spec(w)
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                yield w, c


def pod_template_labels(doc: dict) -> dict:
    if doc.get("kind") == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    if doc.get("kind") == "Pod":
        return doc["metadata"].get("labels", {})
    return doc["spec"]["template"]["metadata"].get("labels", {})


def check_workload_security(doc: dict, scenario: str) -> None:
    spec = pod_spec(doc)
    name = f"[{scenario}] {kn(doc)}"
    psc = spec.get("securityContext") or {}
    problems = []
    if psc.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot is not true")
    if psc.get("runAsUser") == 0:
        problems.append("pod runs as uid 0")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{flag} is set")
    for vol in spec.get("volumes", []):
        if "hostPath" in vol:
            problems.append(f"volume {vol['name']} is a hostPath")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    containers = [("container", c) for c in spec.get("containers", [])] + [
        ("initContainer", c) for c in spec.get("initContainers", [])
    ]
    for role, c in containers:
        csc = c.get("securityContext") or {}
        where = f"{role} {c['name']}"
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if csc.get("privileged"):
            problems.append(f"{where}: privileged")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{where}: capabilities.drop lacks ALL")
        if caps.get("add"):
            problems.append(f"{where}: adds capabilities {caps['add']}")
        if not (csc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and "runAsNonRoot" not in csc)):
            problems.append(f"{where}: runAsNonRoot is not true")
        if csc.get("runAsUser") == 0:
            problems.append(f"{where}: runs as uid 0")
        seccomp = (csc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        image = c.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problems.append(f"{where}: image {image!r} has no pinned tag")
        res = c.get("resources") or {}
        for req in ("cpu", "memory"):
            if req not in (res.get("requests") or {}):
                problems.append(f"{where}: no {req} request")
        if "memory" not in (res.get("limits") or {}):
            problems.append(f"{where}: no memory limit")
        if role == "container" and doc["kind"] not in ONE_SHOT_KINDS:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{where}: no {probe}")
    R.check(f"{name} security context, resources and probes", not problems, "; ".join(problems))


def check_labels(doc: dict, scenario: str, app_version: str) -> None:
    labels = doc.get("metadata", {}).get("labels") or {}
    problems = [f"missing {label}" for label in APP_LABELS if label not in labels]
    if "helm.sh/chart" not in labels:
        problems.append("missing helm.sh/chart")
    if labels.get("app.kubernetes.io/instance") not in (None, RELEASE):
        problems.append(f"instance={labels.get('app.kubernetes.io/instance')}")
    if labels.get("app.kubernetes.io/part-of") not in (None, "jobsched"):
        problems.append(f"part-of={labels.get('app.kubernetes.io/part-of')}")
    if labels.get("app.kubernetes.io/managed-by") not in (None, "Helm"):
        problems.append(f"managed-by={labels.get('app.kubernetes.io/managed-by')}")
    if labels.get("app.kubernetes.io/version") not in (None, app_version):
        problems.append(f"version={labels.get('app.kubernetes.io/version')} (want {app_version})")
    if doc.get("kind") in WORKLOAD_KINDS:
        tmpl = pod_template_labels(doc)
        missing = [label for label in APP_LABELS if label not in tmpl]
        if missing:
            problems.append(f"pod template lacks {missing}")
        if doc["kind"] not in ONE_SHOT_KINDS:
            selector = doc["spec"]["selector"].get("matchLabels", {})
            if not selector or any(tmpl.get(k) != v for k, v in selector.items()):
                problems.append(f"selector {selector} does not match the pod template labels")
            if "app.kubernetes.io/component" not in selector:
                problems.append("selector lacks app.kubernetes.io/component")
            if "app.kubernetes.io/version" in selector or "helm.sh/chart" in selector:
                problems.append("selector contains a label that changes on upgrade")
    R.check(f"[{scenario}] {kn(doc)} labels", not problems, "; ".join(problems))


# ------------------------------------------------------------------------------ cross references


def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if any(labels.get(k) != v for k, v in match.items() if k not in ("matchLabels", "matchExpressions")):
        return False
    for expr in selector.get("matchExpressions", []) or []:
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def container_ports(spec: dict) -> dict[str, int]:
    ports = {}
    for c in spec.get("containers", []):
        for p in c.get("ports", []):
            if "name" in p:
                ports[p["name"]] = p["containerPort"]
    return ports


def check_references(docs: list[dict], scenario: str, external_secrets: set[str], external_claims: set[str]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    workloads = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    secrets = set(by_kind.get("Secret", {})) | external_secrets
    claims = set(by_kind.get("PersistentVolumeClaim", {})) | external_claims
    accounts = set(by_kind.get("ServiceAccount", {})) | {"default"}
    problems: list[str] = []

    for w in workloads:
        spec = pod_spec(w)
        ports = container_ports(spec)
        # `helm test` hooks run after the release's resources exist; other hooks may run before.
        hook = (w["metadata"].get("annotations") or {}).get("helm.sh/hook", "test") != "test"
        sa = spec.get("serviceAccountName", "default")
        if sa not in accounts:
            problems.append(f"{kn(w)} uses ServiceAccount {sa} that is not rendered")
        if hook and sa != "default" and sa in by_kind.get("ServiceAccount", {}):
            problems.append(f"{kn(w)} is a hook but uses the release's ServiceAccount {sa} (created after hooks)")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    if ref["name"] not in secrets:
                        problems.append(f"{kn(w)}/{c['name']} env {env['name']} reads missing Secret {ref['name']}")
                    elif ref["name"] in by_kind.get("Secret", {}):
                        data = by_kind["Secret"][ref["name"]].get("data", {})
                        if ref["key"] not in data and not ref.get("optional"):
                            problems.append(f"{kn(w)} env {env['name']}: Secret {ref['name']} has no key {ref['key']}")
                        if hook:
                            problems.append(f"{kn(w)} is a hook but reads Secret {ref['name']} created after hooks")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problems.append(f"{kn(w)}/{c['name']} {probe} uses unknown port {port}")
        for vol in spec.get("volumes", []):
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim and claim not in claims:
                problems.append(f"{kn(w)} mounts missing claim {claim}")
        mounted = {v["name"] for v in spec.get("volumes", [])} | {
            t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", []) or []
        }
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for m in c.get("volumeMounts", []):
                if m["name"] not in mounted:
                    problems.append(f"{kn(w)}/{c['name']} mounts undefined volume {m['name']}")
        if w["kind"] == "StatefulSet" and w["spec"]["serviceName"] not in by_kind.get("Service", {}):
            problems.append(f"{kn(w)} serviceName {w['spec']['serviceName']} is not rendered")
        for t in w["spec"].get("volumeClaimTemplates", []) or []:
            # volumeClaimTemplates are immutable: a label that changes with the chart or app
            # version would make every `helm upgrade` fail.
            moving = {"app.kubernetes.io/version", "helm.sh/chart"} & set((t["metadata"].get("labels") or {}))
            if moving:
                problems.append(f"{kn(w)} volumeClaimTemplate {t['metadata']['name']} has labels that change on upgrade: {sorted(moving)}")

    for svc in by_kind.get("Service", {}).values():
        targets = [w for w in workloads if selects(svc["spec"].get("selector", {}), pod_template_labels(w))]
        if not targets:
            problems.append(f"{kn(svc)} selects no workload")
        for port in svc["spec"]["ports"]:
            tp = port.get("targetPort")
            for w in targets:
                if isinstance(tp, str) and tp not in container_ports(pod_spec(w)):
                    problems.append(f"{kn(svc)} targetPort {tp} not a port of {kn(w)}")

    for ing in by_kind.get("Ingress", {}).values():
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = by_kind.get("Service", {}).get(backend["name"])
                if not svc:
                    problems.append(f"{kn(ing)} routes to missing Service {backend['name']}")
                elif "name" in backend["port"] and backend["port"]["name"] not in [p.get("name") for p in svc["spec"]["ports"]]:
                    problems.append(f"{kn(ing)} routes to unknown port {backend['port']['name']}")

    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(selects(pdb["spec"]["selector"], pod_template_labels(w)) for w in workloads):
            problems.append(f"{kn(pdb)} selects no workload")

    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = hpa["spec"]["scaleTargetRef"]
        target = by_kind.get(ref["kind"], {}).get(ref["name"])
        if not target:
            problems.append(f"{kn(hpa)} targets missing {ref['kind']}/{ref['name']}")
        elif "replicas" in target["spec"]:
            problems.append(f"{kn(hpa)} target sets spec.replicas; every upgrade would fight the HPA")
        if hpa["spec"]["minReplicas"] > hpa["spec"]["maxReplicas"]:
            problems.append(f"{kn(hpa)} minReplicas > maxReplicas")

    for np in by_kind.get("NetworkPolicy", {}).values():
        selected = [w for w in workloads if selects(np["spec"]["podSelector"], pod_template_labels(w))]
        if not selected:
            problems.append(f"{kn(np)} selects no workload")
        for rule in np["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port.get("port"), str):
                    for w in selected:
                        if port["port"] not in container_ports(pod_spec(w)):
                            problems.append(f"{kn(np)} port {port['port']} is not a port of {kn(w)}")

    for rb in by_kind.get("RoleBinding", {}).values():
        if rb["roleRef"]["name"] not in by_kind.get("Role", {}):
            problems.append(f"{kn(rb)} binds missing Role {rb['roleRef']['name']}")
        for s in rb["subjects"]:
            if s["kind"] == "ServiceAccount" and s["name"] not in accounts:
                problems.append(f"{kn(rb)} binds missing ServiceAccount {s['name']}")

    for sm in by_kind.get("ServiceMonitor", {}).values():
        services = [s for s in by_kind.get("Service", {}).values() if selects(sm["spec"]["selector"], s["metadata"]["labels"])]
        port_names = {p.get("name") for s in services for p in s["spec"]["ports"]}
        comps = sorted({s["metadata"]["labels"]["app.kubernetes.io/component"] for s in services})
        if comps != ["api", "controller", "worker"] and comps != ["api", "worker"]:
            problems.append(f"{kn(sm)} selects Services of {comps}")
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in port_names:
                problems.append(f"{kn(sm)} endpoint port {ep['port']} is on no selected Service")

    R.check(f"[{scenario}] cross-references (Secrets, ports, selectors, claims, accounts)", not problems, "; ".join(problems))


# ------------------------------------------------------------------------------ helpers for assertions


def find(docs: list[dict], kind: str, name_suffix: str) -> dict | None:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix):
            return d
    return None


def container(doc: dict, name: str, init: bool = False) -> dict | None:
    key = "initContainers" if init else "containers"
    for c in pod_spec(doc).get(key, []) or []:
        if c["name"] == name:
            return c
    return None


def env_of(c: dict) -> dict[str, Any]:
    out = {}
    for e in c.get("env", []):
        out[e["name"]] = e.get("value", e.get("valueFrom"))
    return out


def rule_set(rules: list[dict]) -> dict[tuple, tuple]:
    """RBAC rules as {(apiGroups, resources, resourceNames): sorted verbs}."""
    out: dict[tuple, tuple] = {}
    for r in rules:
        key = (tuple(r.get("apiGroups", [])), tuple(r.get("resources", [])), tuple(r.get("resourceNames", []) or []))
        out[key] = tuple(sorted(set(out.get(key, ())) | set(r["verbs"])))
    return out


def secret_value(docs: list[dict], name: str, key: str) -> str | None:
    import base64

    s = find(docs, "Secret", name)
    if not s or key not in s.get("data", {}):
        return None
    return base64.b64decode(s["data"][key]).decode()


# ------------------------------------------------------------------------------ scenario assertions


def three_deployments(docs: list[dict], sc: str, prefix: str, what: str):
    """The api, worker and controller Deployments named `prefix-…`, checked present (`what`); None when one is missing."""
    found = tuple(find(docs, "Deployment", f"{prefix}-{part}") for part in ("api", "worker", "controller"))
    R.check(f"[{sc}] {what}", all(found))
    return found if all(found) else None


def assert_default(docs: list[dict]) -> None:
    sc = "default"
    if not (found := three_deployments(docs, sc, "", "api, worker and controller Deployments rendered")):
        return
    api, worker, ctrl = found
    R.check(f"[{sc}] no migration hook Job with the in-chart Postgres", find(docs, "Job", "-migrate") is None)
    for d in (api, worker):
        inits = [c["name"] for c in pod_spec(d).get("initContainers", [])]
        R.check(
            f"[{sc}] {kn(d)} waits for Postgres, then migrates, as init containers",
            inits[-2:] == ["wait-for-postgres", "migrate"],
            f"init containers: {inits}",
        )
        mig = container(d, "migrate", init=True)
        R.check(f"[{sc}] {kn(d)} init container runs `jobsched migrate`", mig is not None and mig.get("args") == ["migrate"])
    R.check(f"[{sc}] worker terminationGracePeriodSeconds = shutdownGrace 25 + 10", pod_spec(worker).get("terminationGracePeriodSeconds") == 35)
    we = env_of(container(worker, "worker"))
    R.check(
        f"[{sc}] worker env",
        we.get("JOBSCHED_WORKER_CONCURRENCY") == "4" and "JOBSCHED_WORKER_PREFETCH" not in we
        and we.get("JOBSCHED_SHUTDOWN_GRACE") == "25"
        and we.get("JOBSCHED_LEASE_TTL") == "30" and we.get("JOBSCHED_METRICS_LISTEN") == "0.0.0.0:9090"
        and we.get("JOBSCHED_DATA_DIR") == "/data" and we.get("JOBSCHED_LOG_FORMAT") == "json",
        str(we),
    )
    R.check(f"[{sc}] workers serve every queue unless worker.queues names some", "JOBSCHED_QUEUES" not in we, str(we))
    picky = find(documents(render({"worker": {"queues": ["emails", "reports"]}})), "Deployment", "-worker")
    R.check(f"[{sc}] worker.queues [emails, reports] renders JOBSCHED_QUEUES=emails,reports",
            picky is not None and env_of(container(picky, "worker")).get("JOBSCHED_QUEUES") == "emails,reports")
    R.check(f"[{sc}] the http job type may call no host unless worker.http.allow names some",
            "JOBSCHED_HTTP_ALLOW" not in we and "JOBSCHED_SECRETS_DIR" not in we, str(we))
    caller = find(documents(render({"worker": {"http": {"allow": ["api.example.com", "*.corp"],
                                                         "secretName": "http-tokens"}}})),
                  "Deployment", "-worker")
    caller_env = env_of(container(caller, "worker")) if caller else {}
    mounts = {m["name"]: m for m in (container(caller, "worker") or {}).get("volumeMounts", [])} if caller else {}
    vols = {v["name"]: v for v in pod_spec(caller).get("volumes", [])} if caller else {}
    R.check(
        f"[{sc}] worker.http renders JOBSCHED_HTTP_ALLOW and mounts the secret read-only at JOBSCHED_SECRETS_DIR",
        caller_env.get("JOBSCHED_HTTP_ALLOW") == "api.example.com,*.corp"
        and caller_env.get("JOBSCHED_SECRETS_DIR") == "/var/run/jobsched/secrets"
        and mounts.get("http-secrets", {}).get("mountPath") == "/var/run/jobsched/secrets"
        and mounts.get("http-secrets", {}).get("readOnly") is True
        and vols.get("http-secrets", {}).get("secret", {}).get("secretName") == "http-tokens",
        f"{caller_env} {mounts} {vols}",
    )
    ae = env_of(container(api, "api"))
    R.check(f"[{sc}] api listens on 0.0.0.0:8000 and has no tokens by default", ae.get("JOBSCHED_LISTEN") == "0.0.0.0:8000" and "JOBSCHED_API_TOKEN" not in ae, str(ae))
    api_c = container(api, "api")
    R.check(
        f"[{sc}] api probes: readiness /readyz, liveness /livez",
        api_c["readinessProbe"]["httpGet"]["path"] == "/readyz" and api_c["livenessProbe"]["httpGet"]["path"] == "/livez",
    )
    w_c = container(worker, "worker")
    R.check(
        f"[{sc}] worker probes on the metrics port",
        w_c["readinessProbe"]["httpGet"]["port"] == "metrics" and w_c["livenessProbe"]["httpGet"]["port"] == "metrics",
    )
    ce = env_of(container(ctrl, "controller"))
    R.check(
        f"[{sc}] controller env: namespace from the downward API, config name, no leader election with 1 replica",
        ce.get("JOBSCHED_NAMESPACE") == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        and ce.get("JOBSCHED_CONFIG_NAME") == f"{RELEASE}-jobsched"
        and ce.get("JOBSCHED_LEADER_ELECTION") == "false"
        and ce.get("JOBSCHED_METRICS_LISTEN") == "0.0.0.0:9090",
        str(ce),
    )
    role = find(docs, "Role", "-controller")
    rules = rule_set(role["rules"])
    expected = {
        (("jobsched.io",), ("schedulerconfigs",), ()): ("get", "list", "watch"),
        (("jobsched.io",), ("schedulerconfigs/status",), ()): ("patch",),
        (("jobsched.io",), ("jobschedules",), ()): ("get", "list", "watch"),
        (("jobsched.io",), ("jobschedules/status",), ()): ("patch",),
        (("events.k8s.io",), ("events",), ()): ("create",),
    }
    R.check(f"[{sc}] controller Role is exactly the least-privilege rule set (no leases without leader election)", rules == expected, str(rules))
    R.check(f"[{sc}] no ClusterRole or ClusterRoleBinding", not any(d["kind"].startswith("Cluster") for d in docs))
    R.check(
        f"[{sc}] only the controller mounts a ServiceAccount token",
        all(pod_spec(d).get("automountServiceAccountToken") is False for d in docs if d["kind"] in WORKLOAD_KINDS and d is not ctrl)
        and pod_spec(ctrl).get("serviceAccountName", "").endswith("-controller"),
    )
    cfg = find(docs, "SchedulerConfig", "")
    R.check(
        f"[{sc}] default SchedulerConfig named after the release fullname",
        cfg is not None and cfg["metadata"]["name"] == f"{RELEASE}-jobsched"
        and cfg["spec"] == {"policy": "fcfs", "paused": False},
        str(cfg and cfg.get("spec")),
    )
    pw = secret_value(docs, "-postgresql", "postgres-password")
    url = secret_value(docs, "-postgresql", "database-url")
    R.check(
        f"[{sc}] generated Postgres password (32 random chars) and URL in a Secret",
        pw is not None and re.fullmatch(r"[A-Za-z0-9]{32}", pw) is not None
        and url == f"postgres://jobsched:{pw}@{RELEASE}-jobsched-postgresql:5432/jobsched",
        str(url),
    )
    pg_secret = find(docs, "Secret", "-postgresql")
    R.check(f"[{sc}] Postgres Secret is kept on uninstall", (pg_secret["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep")
    rpw = secret_value(docs, "-redis", "redis-password")
    R.check(
        f"[{sc}] generated Redis password and URL",
        rpw is not None and len(rpw) == 32 and secret_value(docs, "-redis", "redis-url") == f"redis://:{rpw}@{RELEASE}-jobsched-redis:6379/0",
    )
    again = documents(render({}))
    R.check(
        f"[{sc}] passwords are random per fresh install (lookup keeps them on upgrade in a cluster)",
        secret_value(again, "-postgresql", "postgres-password") != pw,
    )
    first = {kn(d): d for d in docs if d["kind"] in WORKLOAD_KINDS}
    second = {kn(d): d for d in again if d["kind"] in WORKLOAD_KINDS}
    R.check(
        f"[{sc}] workloads do not depend on the random passwords (no needless rollout on the first upgrade)",
        first == second,
        str(sorted(k for k in first if first[k] != second.get(k))),
    )
    for kind in ("Ingress", "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy", "ConfigMap"):
        R.check(f"[{sc}] no {kind} by default", find(docs, kind, "") is None)
    pdbs = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget")
    R.check(f"[{sc}] PodDisruptionBudgets for api and worker", pdbs == [f"{RELEASE}-jobsched-api", f"{RELEASE}-jobsched-worker"], str(pdbs))
    ann = api["spec"]["template"]["metadata"]["annotations"]
    R.check(f"[{sc}] prometheus.io scrape annotations on the API pods name the metrics port 9090", ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9090", str(ann))
    for sts in ("-postgresql", "-redis"):
        s = find(docs, "StatefulSet", sts)
        R.check(f"[{sc}] in-chart {sts[1:]} StatefulSet with a PVC template", s is not None and len(s["spec"].get("volumeClaimTemplates", [])) == 1)
    pg = find(docs, "StatefulSet", "-postgresql")
    R.check(f"[{sc}] in-chart Postgres uses the official postgres image pinned to a release (16.15)", container(pg, "postgresql")["image"] == "postgres:16.15")
    R.check(f"[{sc}] in-chart Redis uses the official redis image pinned to a release (7.4.11)", container(find(docs, "StatefulSet", "-redis"), "redis")["image"] == "redis:7.4.11")
    plain = [k for k, v in flatten(merged_values({})).items() if re.search(r"(password|token)$", k, re.I) and v]
    R.check(f"[{sc}] no credential in the default values", not plain, str(plain))


def assert_all_on(docs: list[dict]) -> None:
    sc = "all-on"
    if not (found := three_deployments(docs, sc, "js", "fullnameOverride names resources")):
        return
    api, worker, ctrl = found
    R.check(f"[{sc}] worker terminationGracePeriodSeconds = shutdownGrace 50 + 10", pod_spec(worker)["terminationGracePeriodSeconds"] == 60)
    R.check(f"[{sc}] worker Deployment leaves replicas to the HPA", "replicas" not in worker["spec"])
    hpa = find(docs, "HorizontalPodAutoscaler", "js-worker")
    R.check(
        f"[{sc}] HPA autoscaling/v2 on CPU and memory",
        hpa is not None and hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["minReplicas"] == 3
        and hpa["spec"]["maxReplicas"] == 12 and len(hpa["spec"]["metrics"]) == 2 and "behavior" in hpa["spec"],
    )
    ing = find(docs, "Ingress", "js-api")
    R.check(
        f"[{sc}] Ingress with class, host, path and TLS",
        ing is not None and ing["spec"]["ingressClassName"] == "nginx"
        and ing["spec"]["rules"][0]["host"] == "jobsched.example.com"
        and ing["spec"]["tls"] == [{"secretName": "jobsched-example-tls", "hosts": ["jobsched.example.com"]}],
    )
    ce = env_of(container(ctrl, "controller"))
    R.check(f"[{sc}] 2 controller replicas turn leader election on", ctrl["spec"]["replicas"] == 2 and ce["JOBSCHED_LEADER_ELECTION"] == "true")
    R.check(f"[{sc}] leader-election Lease named per release", ce.get("JOBSCHED_LEASE_NAME") == "js-controller", str(ce.get("JOBSCHED_LEASE_NAME")))
    role = find(docs, "Role", "js-controller")
    lease = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    R.check(
        f"[{sc}] Role grants get/update on its own Lease only (resourceNames) and create without resourceNames",
        rule_set(lease) == {
            (("coordination.k8s.io",), ("leases",), ("js-controller",)): ("get", "update"),
            (("coordination.k8s.io",), ("leases",), ()): ("create",),
        },
        str(lease),
    )
    R.check(f"[{sc}] controller rolls without Recreate when leader-elected", ctrl["spec"].get("strategy") is None)
    ae = env_of(container(api, "api"))
    R.check(f"[{sc}] tokens from the generated auth Secret", isinstance(ae.get("JOBSCHED_API_TOKEN"), dict) and find(docs, "Secret", "js-auth") is not None)
    R.check(f"[{sc}] body limit passed", ae.get("JOBSCHED_BODY_LIMIT") == "2097152")
    R.check(f"[{sc}] RUST_LOG passed", ae.get("RUST_LOG") == "info,jobsched_runtime=debug")
    pvc = find(docs, "PersistentVolumeClaim", "js-data")
    R.check(f"[{sc}] data PVC (ReadWriteMany) mounted by api and worker", pvc is not None and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
            and all(any((v.get("persistentVolumeClaim") or {}).get("claimName") == "js-data" for v in pod_spec(d)["volumes"]) for d in (api, worker)))
    sm = find(docs, "ServiceMonitor", "js")
    R.check(f"[{sc}] ServiceMonitor monitoring.coreos.com/v1 with the release label", sm is not None and sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["metadata"]["labels"].get("release") == "prometheus")
    cm = find(docs, "ConfigMap", "js-dashboard")
    dashboard = (CHART / "dashboards/jobsched-dashboard.json").read_text()
    R.check(
        f"[{sc}] dashboard ConfigMap with grafana_dashboard=\"1\" holds the chart's dashboard JSON verbatim",
        cm is not None and cm["metadata"]["labels"].get("grafana_dashboard") == "1"
        and cm["data"]["jobsched-dashboard.json"] == dashboard.rstrip("\n"),
    )
    nps = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy")
    R.check(f"[{sc}] NetworkPolicies for api, worker, controller, postgresql, redis", nps == ["js-api", "js-controller", "js-postgresql", "js-redis", "js-worker"], str(nps))
    pdb = find(docs, "PodDisruptionBudget", "js-api")
    R.check(f"[{sc}] PDB maxUnavailable passes percentages through", pdb["spec"]["maxUnavailable"] == "50%")
    cfg = find(docs, "SchedulerConfig", "js")
    R.check(f"[{sc}] SchedulerConfig from values", cfg["spec"] == {"policy": "round_robin", "roundRobin": {"quantumSeconds": 1.5}, "paused": True}, str(cfg["spec"]))
    R.check(f"[{sc}] imagePullSecrets and image tag", pod_spec(api)["imagePullSecrets"] == [{"name": "regcred"}] and container(api, "api")["image"] == "registry.example.com/jobsched:1.2.3")
    R.check(f"[{sc}] commonLabels on resources", all(d["metadata"]["labels"].get("team") == "platform" for d in docs))


def assert_external(docs: list[dict]) -> None:
    sc = "external"
    job = find(docs, "Job", "-migrate")
    R.check(f"[{sc}] migrations run as a hook Job when the DB URL is in an existing Secret", job is not None)
    if job is None:
        return
    ann = job["metadata"]["annotations"]
    R.check(
        f"[{sc}] hook annotations",
        ann.get("helm.sh/hook") == "pre-install,pre-upgrade" and ann.get("helm.sh/hook-delete-policy") == "before-hook-creation,hook-succeeded",
        str(ann),
    )
    c = container(job, "migrate")
    R.check(
        f"[{sc}] hook Job runs `jobsched migrate` with the URL from the existing Secret",
        c["args"] == ["migrate"] and env_of(c)["JOBSCHED_DATABASE_URL"] == {"secretKeyRef": {"name": "jobsched-db", "key": "url"}},
    )
    R.check(f"[{sc}] hook Job never restarts pods in place", pod_spec(job)["restartPolicy"] == "Never")
    for d in (find(docs, "Deployment", "-api"), find(docs, "Deployment", "-worker")):
        R.check(f"[{sc}] {kn(d)} has no migrate init container", not pod_spec(d).get("initContainers"))
    R.check(f"[{sc}] no in-chart Postgres/Redis and no generated Secret", not any(d["kind"] in ("StatefulSet", "Secret") for d in docs))
    we = env_of(container(find(docs, "Deployment", "-worker"), "worker"))
    R.check(f"[{sc}] Redis URL from the existing Secret", we["JOBSCHED_REDIS_URL"] == {"secretKeyRef": {"name": "jobsched-redis", "key": "redis-url"}})
    R.check(f"[{sc}] existing data claim mounted, no PVC created", find(docs, "PersistentVolumeClaim", "") is None)
    ce = env_of(container(find(docs, "Deployment", "-controller"), "controller"))
    R.check(f"[{sc}] leaderElection: true forces leader election with 1 replica", ce["JOBSCHED_LEADER_ELECTION"] == "true")


def assert_external_url(docs: list[dict]) -> None:
    sc = "external-url"
    R.check(f"[{sc}] no hook Job (the chart's Secret does not exist before hooks)", find(docs, "Job", "") is None)
    api = find(docs, "Deployment", "-api")
    inits = [c["name"] for c in pod_spec(api).get("initContainers", [])]
    R.check(f"[{sc}] migrate init container without wait-for-postgres", inits == ["seed-data", "migrate"], str(inits))
    R.check(f"[{sc}] URLs stored in the chart's Secret", secret_value(docs, "-external", "database-url").startswith("postgres://")
            and secret_value(docs, "-external", "redis-url").startswith("rediss://"))
    R.check(f"[{sc}] controller disabled: no controller, Role or SchedulerConfig", not any(d["kind"] in ("Role", "RoleBinding", "SchedulerConfig") for d in docs) and find(docs, "Deployment", "-controller") is None)
    R.check(f"[{sc}] metrics.podAnnotations=false drops prometheus.io annotations", "prometheus.io/scrape" not in api["spec"]["template"]["metadata"]["annotations"])


def assert_kind(docs: list[dict]) -> None:
    sc = "kind"
    ing = find(docs, "Ingress", "-api")
    R.check(f"[{sc}] ingress-nginx Ingress on jobsched.localhost", ing is not None and ing["spec"]["ingressClassName"] == "nginx" and ing["spec"]["rules"][0]["host"] == "jobsched.localhost")
    kind_image = SCENARIOS["kind"].get("image") or {}
    R.check(f"[{sc}] values-kind.yaml leaves image.repository and image.tag to `make helm-install` (--set from `make image`)",
            "tag" not in kind_image and "repository" not in kind_image and "digest" not in kind_image, str(kind_image))
    with helm.Chart.load(str(CHART)) as chart:
        set_by_make = documents(chart.render(merge(SCENARIOS["kind"], {"image": {"repository": "jobsched", "tag": "git-0123456789ab"}}),
                                             name=RELEASE, namespace=NAMESPACE, is_install=True))
    R.check(f"[{sc}] with make helm-install's --set the pods run jobsched:git-<commit> (loaded by `make kind-load`), IfNotPresent",
            container(find(set_by_make, "Deployment", "-api"), "api")["image"] == "jobsched:git-0123456789ab"
            and container(find(set_by_make, "Deployment", "-api"), "api")["imagePullPolicy"] == "IfNotPresent")
    # `make helm-install` and docs/kubernetes.md use the release name "jobsched": objects are then
    # named "jobsched-*" and the SchedulerConfig the docs and tests/e2e/run.sh apply is "jobsched".
    with helm.Chart.load(str(CHART)) as chart:
        named = documents(chart.render(SCENARIOS["kind"], name="jobsched", namespace="jobsched", is_install=True))
    names = {kn(d) for d in named}
    want = {"Deployment/jobsched-api", "Deployment/jobsched-worker", "Deployment/jobsched-controller",
            "Service/jobsched-api", "Ingress/jobsched-api", "SchedulerConfig/jobsched"}
    R.check(f"[{sc}] release \"jobsched\" names objects as docs/kubernetes.md and tests/e2e/run.sh expect", want <= names, str(sorted(want - names)))
    ctrl = find(named, "Deployment", "jobsched-controller")
    R.check(f"[{sc}] the controller follows SchedulerConfig \"jobsched\"", env_of(container(ctrl, "controller"))["JOBSCHED_CONFIG_NAME"] == "jobsched")


# ------------------------------------------------------------------------------ hardening


MIB = 1024 * 1024
REST_PATHS = ["/jobs", "/job-types", "/schedules", "/queues", "/scheduler", "/health", "/ui"]
DOC_PATHS = ["/docs", "/api-docs"]


def render_docs(values: dict) -> tuple[list[dict] | None, str]:
    """Rendered documents, or (None, error message) when the render fails."""
    try:
        return documents(render(values)), ""
    except helm.HelmError as e:
        return None, str(e)


def expect_render_failure(label: str, values: dict, needles: tuple[str, ...]) -> None:
    docs, err = render_docs(values)
    if docs is not None:
        R.check(f"render fails: {label}", False, "rendered without error")
        return
    missing = [n for n in needles if n not in err]
    R.check(f"render fails: {label} (message names {', '.join(needles)})", not missing, f"message lacks {missing}: {err}")


def expect_render(label: str, values: dict) -> list[dict] | None:
    docs, err = render_docs(values)
    R.check(f"renders: {label}", docs is not None, err)
    return docs


def ingress_paths(ing: dict) -> list[tuple[str, str, str, str]]:
    return [
        (p["path"], p["pathType"], p["backend"]["service"]["name"], p["backend"]["service"]["port"].get("name", ""))
        for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]
    ]


def command_lines(docs: list[dict]) -> list[tuple[str, str]]:
    """(where, text) for every command, args and exec-probe command of every container."""
    out = []
    for w, c in containers(docs):
        where = f"{kn(w)}/{c['name']}"
        for field in ("command", "args"):
            for item in c.get(field) or []:
                out.append((f"{where} {field}", str(item)))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            for item in ((c.get(probe) or {}).get("exec") or {}).get("command") or []:
                out.append((f"{where} {probe}", str(item)))
    return out


def secret_values(docs: list[dict]) -> dict[str, str]:
    import base64

    out = {}
    for d in docs:
        if d["kind"] != "Secret":
            continue
        for k, v in (d.get("data") or {}).items():
            out[f"{d['metadata']['name']}/{k}"] = base64.b64decode(v).decode()
        for k, v in (d.get("stringData") or {}).items():
            out[f"{d['metadata']['name']}/{k}"] = v
    return out


def hardening_ingress_auth() -> None:
    """1. No Ingress in front of an API without auth, unless explicitly allowed."""
    ing_on = {"api": {"ingress": {"enabled": True}}}
    expect_render_failure("Ingress enabled with auth.enabled=false", ing_on, ("auth.enabled", "api.ingress.allowUnauthenticated"))
    docs = expect_render("Ingress without auth with api.ingress.allowUnauthenticated=true",
                         {"api": {"ingress": {"enabled": True, "allowUnauthenticated": True}}})
    if docs is not None:
        R.check("ingress-auth: allowUnauthenticated renders the Ingress", find(docs, "Ingress", "-api") is not None)
    docs = expect_render("Ingress with auth.enabled=true", {"auth": {"enabled": True}, **ing_on})
    if docs is not None:
        R.check("ingress-auth: Ingress with auth renders it, tokens wired", find(docs, "Ingress", "-api") is not None
                and "JOBSCHED_API_TOKEN" in env_of(container(find(docs, "Deployment", "-api"), "api")))
    defaults = merged_values({})
    R.check("ingress-auth: default install renders because the Ingress is off by default (auth also off)",
            defaults["api"]["ingress"]["enabled"] is False and defaults["api"]["ingress"]["allowUnauthenticated"] is False
            and render_docs({})[0] is not None)
    kind = merged_values(SCENARIOS["kind"])
    R.check("ingress-auth: the kind values opt in with allowUnauthenticated (local cluster, documented)",
            kind["api"]["ingress"]["enabled"] and not kind["auth"]["enabled"] and kind["api"]["ingress"]["allowUnauthenticated"])


def hardening_admin_token() -> None:
    """2. The admin token is required whenever auth is on."""
    for label, values, secret in (
        ("generated Secret", {"auth": {"enabled": True}}, f"{RELEASE}-jobsched-auth"),
        ("auth.existingSecret", {"auth": {"enabled": True, "existingSecret": "my-tokens"}}, "my-tokens"),
    ):
        docs = expect_render(f"auth with {label}", values)
        if docs is None:
            continue
        env = {e["name"]: e for e in container(find(docs, "Deployment", "-api"), "api").get("env", [])}
        admin = ((env.get("JOBSCHED_ADMIN_TOKEN") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        api = ((env.get("JOBSCHED_API_TOKEN") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        R.check(f"admin-token: [{label}] JOBSCHED_ADMIN_TOKEN is required (secretKeyRef without optional: true)",
                admin == {"name": secret, "key": "admin-token"}, str(admin))
        R.check(f"admin-token: [{label}] JOBSCHED_API_TOKEN from key api-token of the same Secret",
                api == {"name": secret, "key": "api-token"}, str(api))
        if label == "generated Secret":
            vals = secret_values(docs)
            a, b = vals.get(f"{secret}/api-token"), vals.get(f"{secret}/admin-token")
            R.check("admin-token: generated Secret holds two different random tokens", bool(a and b and a != b and len(b) == 32))
        else:
            R.check("admin-token: no generated auth Secret with auth.existingSecret", find(docs, "Secret", "-auth") is None)
    optional = [f"{name}: {kn(w)}/{c['name']} {e['name']}"
                for name, values in SCENARIOS.items() if merged_values(values)["auth"]["enabled"]
                for w in (render_docs(values)[0] or []) if w["kind"] in WORKLOAD_KINDS
                for c in pod_spec(w).get("containers", [])
                for e in c.get("env", []) if e["name"].endswith("_TOKEN")
                and ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("optional")]
    R.check("admin-token: no token env var is optional in any scenario", not optional, str(optional))
    expect_render_failure("auth.apiTokenKey == auth.adminTokenKey",
                          {"auth": {"enabled": True, "existingSecret": "t", "apiTokenKey": "token", "adminTokenKey": "token"}},
                          ("auth.apiTokenKey", "auth.adminTokenKey"))
    readme = (CHART / "README.md").read_text()
    R.check("admin-token: chart README says which keys auth.existingSecret must hold and that the API token alone gets 403",
            all(s in readme for s in ("auth.existingSecret", "`api-token`", "`admin-token`", "JOBSCHED_ADMIN_TOKEN", "403")))


def hardening_api_metrics(rendered: dict[str, list[dict]]) -> None:
    """3. API /metrics on its own port; the Ingress routes only the REST paths."""
    docs = rendered.get("default") or []
    api = find(docs, "Deployment", "-api")
    if api is None:
        R.check("api-metrics: default render has the API Deployment", False)
        return
    c = container(api, "api")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    env = env_of(c)
    R.check("api-metrics: API container ports http 8000 and metrics 9090", ports == {"http": 8000, "metrics": 9090}, str(ports))
    R.check("api-metrics: API env JOBSCHED_METRICS_LISTEN=0.0.0.0:9090, REST still on 0.0.0.0:8000",
            env.get("JOBSCHED_METRICS_LISTEN") == "0.0.0.0:9090" and env.get("JOBSCHED_LISTEN") == "0.0.0.0:8000", str(env))
    probes = {p: (c[p]["httpGet"]["path"], c[p]["httpGet"]["port"]) for p in ("startupProbe", "livenessProbe", "readinessProbe")}
    R.check("api-metrics: API probes still /livez and /readyz on the REST port (http)",
            probes == {"startupProbe": ("/livez", "http"), "livenessProbe": ("/livez", "http"), "readinessProbe": ("/readyz", "http")},
            str(probes))
    svc = find(docs, "Service", f"{RELEASE}-jobsched-api")
    R.check("api-metrics: API Service publishes only the REST port, without prometheus.io annotations",
            svc is not None and [p["name"] for p in svc["spec"]["ports"]] == ["http"]
            and not any(k.startswith("prometheus.io/") for k in (svc["metadata"].get("annotations") or {})),
            str(svc and svc["spec"]["ports"]))
    msvc = find(docs, "Service", "-api-metrics")
    R.check("api-metrics: headless <fullname>-api-metrics Service on port metrics (9090), without prometheus.io annotations (the pods carry them)",
            msvc is not None and msvc["spec"].get("clusterIP") == "None"
            and msvc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
            and not any(k.startswith("prometheus.io/") for k in (msvc["metadata"].get("annotations") or {}))
            and selects(msvc["spec"]["selector"], pod_template_labels(api)),
            str(msvc and msvc["metadata"]))

    all_on = rendered.get("all-on") or []
    sm = find(all_on, "ServiceMonitor", "js")
    R.check("api-metrics: ServiceMonitor scrapes only port metrics (no endpoint on the REST port)",
            sm is not None and [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"], str(sm and sm["spec"]["endpoints"]))
    if sm is not None:
        scraped = sorted(d["metadata"]["name"] for d in all_on if d["kind"] == "Service"
                         and selects(sm["spec"]["selector"], d["metadata"]["labels"])
                         and any(p.get("name") == "metrics" for p in d["spec"]["ports"]))
        R.check("api-metrics: ServiceMonitor reaches the API, worker and controller metrics Services",
                scraped == ["js-api-metrics", "js-controller-metrics", "js-worker-metrics"], str(scraped))
    np = find(all_on, "NetworkPolicy", "js-api")
    if np is not None:
        rules = [([p["port"] for p in r.get("ports", [])], r.get("from")) for r in np["spec"]["ingress"]]
        v = SCENARIOS["all-on"]["networkPolicy"]
        test_pod = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "jobsched", "app.kubernetes.io/instance": RELEASE,
                                                    "app.kubernetes.io/component": "test"}}}
        R.check("api-metrics: API NetworkPolicy admits http from apiIngressFrom (and the helm test pod) and metrics from metricsIngressFrom",
                rules == [(["http"], v["apiIngressFrom"] + [test_pod]), (["metrics"], v["metricsIngressFrom"])], str(rules))
    else:
        R.check("api-metrics: all-on renders the API NetworkPolicy", False)

    for label, values, want in (
        ("default paths", {"auth": {"enabled": True}, "api": {"ingress": {"enabled": True}}}, REST_PATHS),
        ("exposeDocs", {"auth": {"enabled": True}, "api": {"ingress": {"enabled": True, "exposeDocs": True}}}, REST_PATHS + DOC_PATHS),
    ):
        d = expect_render(f"Ingress ({label})", values)
        ing = d and find(d, "Ingress", "-api")
        if not ing:
            R.check(f"api-metrics: Ingress rendered ({label})", False)
            continue
        paths = ingress_paths(ing)
        R.check(f"api-metrics: Ingress ({label}) routes exactly {want} as Prefix paths to the API's http port",
                paths == [(p, "Prefix", f"{RELEASE}-jobsched-api", "http") for p in want], str(paths))
        leaked = [p for p, *_ in paths if p in ("/", "/metrics", "/livez", "/readyz") or (label == "default paths" and p in DOC_PATHS)]
        R.check(f"api-metrics: Ingress ({label}) never routes /, /metrics or the probes{'' if label == 'exposeDocs' else ', /docs or /api-docs'}",
                not leaked, str(leaked))
    d = expect_render("api.metricsPort=9100", {"api": {"metricsPort": 9100}})
    if d:
        a = find(d, "Deployment", "-api")
        ac = container(a, "api")
        m = find(d, "Service", "-api-metrics")
        R.check("api-metrics: api.metricsPort moves the container port, JOBSCHED_METRICS_LISTEN, annotations and Service",
                {p["name"]: p["containerPort"] for p in ac["ports"]} == {"http": 8000, "metrics": 9100}
                and env_of(ac).get("JOBSCHED_METRICS_LISTEN") == "0.0.0.0:9100"
                and a["spec"]["template"]["metadata"]["annotations"].get("prometheus.io/port") == "9100"
                and m["spec"]["ports"][0]["port"] == 9100)
    expect_render_failure("api.metricsPort equal to the REST port 8000", {"api": {"metricsPort": 8000}}, ("api.metricsPort",))
    expect_render_failure("removed api.ingress.path still set", {"api": {"ingress": {"path": "/"}}}, ("api.ingress.path", "/jobs"))


def hardening_redis_password(rendered: dict[str, list[dict]]) -> None:
    """4. No password on any command line; the in-chart Redis reads it from a mounted Secret."""
    variants = dict(rendered)
    extra, _ = render_docs({"redis": {"persistence": {"enabled": False}}})
    if extra is not None:
        variants["redis-no-persistence"] = extra
    for name, docs in variants.items():
        secrets = {k: v for k, v in secret_values(docs).items() if len(v) >= 8}
        # The URLs embed the passwords; check the passwords themselves and the whole URLs.
        leaks = [f"{where} contains {key}" for where, text in command_lines(docs) for key, value in secrets.items() if value in text]
        R.check(f"redis-password: [{name}] no Secret value (password, token, URL) in any container command, args or exec probe",
                not leaks and (bool(secrets) or name in ("external",)), "; ".join(leaks) or "no Secret rendered")
        # The kubelet substitutes $(VAR) in command and args before exec: a Secret-backed
        # variable referenced that way ends up on the command line too.
        expanded = []
        for w, c in containers(docs):
            secret_env = {e["name"] for e in c.get("env", []) if (e.get("valueFrom") or {}).get("secretKeyRef")}
            for item in (c.get("command") or []) + (c.get("args") or []):
                expanded += [f"{kn(w)}/{c['name']}: $({v})" for v in secret_env if f"$({v})" in str(item)]
        R.check(f"redis-password: [{name}] no Secret-backed env var expanded by the kubelet ($(VAR)) into a command line",
                not expanded, "; ".join(expanded))
    for name in ("default", "redis-no-persistence"):
        docs = variants.get(name)
        sts = docs and find(docs, "StatefulSet", "-redis")
        if not sts:
            R.check(f"redis-password: [{name}] in-chart Redis rendered", False)
            continue
        c = container(sts, "redis")
        script = "\n".join(c.get("args") or [])
        env = {e["name"]: e for e in c.get("env", [])}
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        vols = {v["name"]: v for v in pod_spec(sts)["volumes"]}
        pw_mount = next((m for m in mounts.values() if (vols.get(m["name"]) or {}).get("secret")), None)
        conf_mount = mounts.get("config")
        R.check(f"redis-password: [{name}] Redis runs `sh -c` that writes requirepass from the mounted Secret and execs redis-server with the config file",
                c.get("command") == ["/bin/sh", "-c"] and "--requirepass" not in script and "$(REDIS_PASSWORD)" not in script
                and pw_mount is not None and conf_mount is not None
                and f"{pw_mount['mountPath']}/redis-password)" in script
                and "requirepass" in script and f"> {conf_mount['mountPath']}/redis.conf" in script
                and f"exec redis-server {conf_mount['mountPath']}/redis.conf --dir /data" in script,
                script)
        R.check(f"redis-password: [{name}] password volume is the Redis Secret, read-only; config on a memory emptyDir",
                pw_mount is not None and pw_mount.get("readOnly") is True
                and vols[pw_mount["name"]]["secret"]["secretName"] == f"{RELEASE}-jobsched-redis"
                and (vols.get("config") or {}).get("emptyDir", {}).get("medium") == "Memory")
        R.check(f"redis-password: [{name}] no REDIS_PASSWORD env; probes use REDISCLI_AUTH from the Secret, no -a",
                "REDIS_PASSWORD" not in env
                and env.get("REDISCLI_AUTH", {}).get("valueFrom", {}).get("secretKeyRef") == {"name": f"{RELEASE}-jobsched-redis", "key": "redis-password"}
                and all(" -a " not in " ".join(c[p]["exec"]["command"]) + " " and "redis-cli" in " ".join(c[p]["exec"]["command"])
                        for p in ("livenessProbe", "readinessProbe")))
        flags = "--appendonly yes" if name == "default" else "--appendonly no --save ''"
        R.check(f"redis-password: [{name}] redis-server keeps its persistence flags ({flags})", flags in script, script)


def hardening_controller_role() -> None:
    """5. The controller's Role names its own Lease."""
    for label, values, lease in (
        ("2 replicas", {"controller": {"replicas": 2}}, f"{RELEASE}-jobsched-controller"),
        ("leaderElection true, fullnameOverride", {"fullnameOverride": "acme", "controller": {"leaderElection": True}}, "acme-controller"),
        ("JOBSCHED_LEASE_NAME in extraEnv", {"controller": {"replicas": 2, "extraEnv": [{"name": "JOBSCHED_LEASE_NAME", "value": "custom-lease"}]}}, "custom-lease"),
    ):
        docs = expect_render(f"controller Role ({label})", values)
        if docs is None:
            continue
        role = find(docs, "Role", "-controller")
        ctrl = container(find(docs, "Deployment", "-controller"), "controller")
        env_lease = [e.get("value") for e in ctrl["env"] if e["name"] == "JOBSCHED_LEASE_NAME"]
        leases = [r for r in role["rules"] if "leases" in r["resources"]]
        R.check(f"controller-role: [{label}] Lease get/update only with resourceNames [{lease}], create alone without",
                rule_set(leases) == {
                    (("coordination.k8s.io",), ("leases",), (lease,)): ("get", "update"),
                    (("coordination.k8s.io",), ("leases",), ()): ("create",),
                } and set(env_lease) == {lease},
                f"rules {leases}, JOBSCHED_LEASE_NAME {env_lease}")
        broad = [r for r in role["rules"] if not r.get("resourceNames") and set(r["verbs"]) & {"update", "patch", "delete", "deletecollection"}
                 and r["resources"] not in (["schedulerconfigs/status"], ["jobschedules/status"])]
        wild = [r for r in role["rules"] if "*" in r["verbs"] or "*" in r["resources"] or "*" in r["apiGroups"]]
        R.check(f"controller-role: [{label}] no wildcard rule and no write verb on a whole resource type (status patch aside)",
                not broad and not wild, str(broad + wild))
    deploy_rbac = [d for d in yaml.safe_load_all((ROOT / "deploy/rbac-controller.yaml").read_text()) if d]
    deploy_role = next((d for d in deploy_rbac if d["kind"] == "Role"), None)
    with helm.Chart.load(str(CHART)) as chart:
        named = documents(chart.render({"controller": {"replicas": 2}}, name="jobsched", namespace="jobsched", is_install=True))
    chart_role = find(named, "Role", "jobsched-controller")
    R.check("controller-role: deploy/rbac-controller.yaml grants exactly the chart's Role (release \"jobsched\", leader election on)",
            deploy_role is not None and chart_role is not None and rule_set(deploy_role["rules"]) == rule_set(chart_role["rules"]),
            f"deploy {deploy_role and rule_set(deploy_role['rules'])} vs chart {chart_role and rule_set(chart_role['rules'])}")


def hardening_decode_budget(rendered: dict[str, list[dict]]) -> None:
    """6. The worker memory limit leaves room for the image decode budget."""
    docs = rendered.get("default") or []
    w = find(docs, "Deployment", "-worker")
    env = env_of(container(w, "worker")) if w else {}
    defaults = merged_values({})["worker"]
    R.check("decode-budget: default worker.decodeBudget 192Mi passed as JOBSCHED_DECODE_BUDGET=201326592 bytes",
            defaults["decodeBudget"] == "192Mi" and env.get("JOBSCHED_DECODE_BUDGET") == str(192 * MIB), str(env.get("JOBSCHED_DECODE_BUDGET")))
    R.check("decode-budget: default worker memory limit (512Mi) holds the budget + 192Mi baseline",
            defaults["resources"]["limits"]["memory"] == "512Mi" and 512 >= 192 + 192)
    for label, values, want in (
        ("320Mi budget in the default 512Mi (exactly budget + baseline)", {"worker": {"decodeBudget": "320Mi"}}, 320 * MIB),
        ("integer bytes", {"worker": {"decodeBudget": 100000000}}, 100000000),
        ("decimal quantity and a 1Gi limit", {"worker": {"decodeBudget": "0.5Gi", "resources": {"limits": {"memory": "1Gi"}}}}, 512 * MIB),
        ("832Mi budget in a 1Gi limit", {"worker": {"decodeBudget": "832Mi", "resources": {"limits": {"memory": "1Gi"}}}}, 832 * MIB),
        ("decimal-suffix limit 1G", {"worker": {"decodeBudget": "700M", "resources": {"limits": {"memory": "1G"}}}}, 700 * 1000 * 1000),
        ("integer-byte limit", {"worker": {"decodeBudget": "64Mi", "resources": {"limits": {"memory": 268435456}}}}, 64 * MIB),
    ):
        d = expect_render(f"decodeBudget, {label}", values)
        if d:
            got = env_of(container(find(d, "Deployment", "-worker"), "worker")).get("JOBSCHED_DECODE_BUDGET")
            R.check(f"decode-budget: {label} -> JOBSCHED_DECODE_BUDGET={want}", got == str(want), str(got))
    needles = ("worker.resources.limits.memory", "worker.decodeBudget", "192Mi baseline")
    expect_render_failure("decodeBudget 321Mi over the default 512Mi limit", {"worker": {"decodeBudget": "321Mi"}}, needles + ("513Mi",))
    expect_render_failure("decodeBudget 1Gi with a 1Gi limit", {"worker": {"decodeBudget": "1Gi", "resources": {"limits": {"memory": "1Gi"}}}}, needles + ("1216Mi",))
    expect_render_failure("worker limit 256Mi with the default budget", {"worker": {"resources": {"limits": {"memory": "256Mi"}}}}, needles + ("384Mi",))
    with helm.Chart.load(str(CHART)) as chart:
        for label, bad in (("text", "lots"), ("zero", 0), ("negative", -1), ("unknown suffix", "1Xi")):
            try:
                chart.validate_schema({"worker": {"decodeBudget": bad}})
                R.check(f"decode-budget: schema rejects worker.decodeBudget {label} ({bad!r})", False, "accepted")
            except helm.HelmValuesError:
                R.check(f"decode-budget: schema rejects worker.decodeBudget {label} ({bad!r})", True)
    readme = (CHART / "README.md").read_text()
    R.check("decode-budget: chart README explains decodeBudget, JOBSCHED_DECODE_BUDGET and the 192Mi baseline",
            all(s in readme for s in ("worker.decodeBudget", "JOBSCHED_DECODE_BUDGET", "192Mi")))


def section_hardening(rendered: dict[str, list[dict]]) -> None:
    new_values = {
        "auth": {"enabled": True, "existingSecret": "t"},
        "api": {"metricsPort": 9100, "ingress": {"enabled": True, "allowUnauthenticated": False, "exposeDocs": True}},
        "worker": {"decodeBudget": "256Mi", "resources": {"limits": {"memory": "1Gi"}}},
    }
    R.section("hardening: new values pass the schema")
    with helm.Chart.load(str(CHART)) as chart:
        for label, v in (("all new keys", new_values), ("decodeBudget in bytes", {"worker": {"decodeBudget": 201326592}})):
            try:
                chart.validate_schema(v)
                R.check(f"schema accepts {label}", True)
            except helm.HelmError as e:
                R.check(f"schema accepts {label}", False, str(e))
    R.sections("hardening", (
        ("1. no Ingress without auth", hardening_ingress_auth),
        ("2. admin token required", hardening_admin_token),
        ("3. API metrics on their own port, Ingress routes REST paths only", lambda: hardening_api_metrics(rendered)),
        ("4. Redis password off the command line", lambda: hardening_redis_password(rendered)),
        ("5. controller Role limited to its own Lease", hardening_controller_role),
        ("6. worker memory vs image decode budget", lambda: hardening_decode_budget(rendered)),
    ))


# ------------------------------------------------------------------------------ day one to day thirty (issue 19)


def merge(base: dict, over: dict) -> dict:
    """Deep merge of two values dicts (over wins), as Helm merges -f files and --set."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def all_containers(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(workload, container) for every container and init container of every workload or Pod."""
    out = []
    for w in docs:
        if w["kind"] in WORKLOAD_KINDS:
            spec = pod_spec(w)
            out += [(w, c) for c in spec.get("containers", []) + (spec.get("initContainers") or [])]
    return out


BACKING_CONTAINERS = {"postgresql", "redis", "wait-for-postgres"}


def jobsched_images(docs: list[dict]) -> dict[str, str]:
    """{kind/name/container: image} of every container running the jobsched image."""
    return {f"{kn(w)}/{c['name']}": c["image"] for w, c in all_containers(docs) if c["name"] not in BACKING_CONTAINERS}


def render_release(values: dict, upgrade: bool = False, chart_dir: pathlib.Path = CHART) -> list[dict]:
    with helm.Chart.load(str(chart_dir)) as chart:
        return documents(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the variables of an enclosing `make` (a nested make must not
    inherit its flags), plus `extra`."""
    drop = {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES",
            # Makefile.packaging settings a caller may have exported: the checks assume the defaults.
            "IMAGE", "IMAGE_TAG", "IMAGE_REF_FILE", "KIND_CLUSTER", "HELM_RELEASE", "K8S_NAMESPACE", "HELM_VALUES"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def stub_bin(directory: pathlib.Path, names: tuple[str, ...]) -> None:
    """Commands that only log their arguments to $STUB_LOG."""
    for name in names:
        path = directory / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "$STUB_LOG"\n')
        path.chmod(0o755)


def day1_image() -> None:
    """1. A tag per build, set by `make helm-install`; image.digest."""
    tag_values = {"image": {"repository": "registry.example.com/jobsched", "tag": "git-0123456789ab"}}
    digest = "sha256:" + "0123456789abcdef" * 4
    for label, extra, want in (
        ("image.tag", tag_values, "registry.example.com/jobsched:git-0123456789ab"),
        ("image.digest (tag ignored)", merge(tag_values, {"image": {"digest": digest}}), f"registry.example.com/jobsched@{digest}"),
    ):
        for scenario, base in (("in-chart backends, auth on", {"auth": {"enabled": True}}),
                               ("external database (hook Job)", SCENARIOS["external"])):
            docs = expect_render(f"{label}, {scenario}", merge(base, extra))
            if docs is None:
                continue
            images = jobsched_images(docs)
            roles = {k.split("/")[1].rsplit("-", 1)[-1] for k in images}
            wrong = {k: v for k, v in images.items() if v != want}
            R.check(f"image: {label} [{scenario}] -> every jobsched container runs {want} ({len(images)} containers)",
                    not wrong and len(images) >= 4, f"wrong: {wrong}; roles {sorted(roles)}")
    docs = render_docs(SCENARIOS["external"])[0] or []
    R.check("image: the external scenario covers the migrate hook Job and the helm test Pod",
            any(k.startswith("Job/") for k in jobsched_images(docs)) and any(k.startswith("Pod/") for k in jobsched_images(docs)),
            str(sorted(jobsched_images(docs))))
    with helm.Chart.load(str(CHART)) as chart:
        for label, bad in (("image.tag latest", {"image": {"tag": "latest"}}),
                           ("image.digest without algorithm", {"image": {"digest": "0123456789abcdef0123456789abcdef"}}),
                           ("postgresql.image.tag latest", {"postgresql": {"image": {"tag": "latest"}}}),
                           ("redis.image.tag empty", {"redis": {"image": {"tag": ""}}})):
            try:
                chart.validate_schema(bad)
                R.check(f"image: schema rejects {label}", False, "accepted")
            except helm.HelmValuesError:
                R.check(f"image: schema rejects {label}", True)

    # deploy/kind/image-tag.sh in a scratch git repository: tag by commit, plus a content hash
    # when the tree is dirty.
    script = ROOT / "deploy/kind/image-tag.sh"
    with tempfile.TemporaryDirectory() as tmp:
        repo = pathlib.Path(tmp) / "src"
        (repo / "deploy/kind").mkdir(parents=True)
        shutil.copy(script, repo / "deploy/kind/image-tag.sh")
        env = clean_env(GIT_CEILING_DIRECTORIES=tmp, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_SYSTEM="/dev/null")

        def git(*args: str) -> str:
            return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=repo, env=env,
                                  capture_output=True, text=True, check=True).stdout.strip()

        def tag() -> str:
            return subprocess.run(["bash", str(repo / "deploy/kind/image-tag.sh")], env=env, capture_output=True, text=True, check=True).stdout.strip()

        nogit = tag()
        (repo / "a.txt").write_text("one\n")
        nogit2 = tag()
        R.check("image-tag: outside git the tag is src-<content hash>, and a changed file changes it",
                re.fullmatch(r"src-[0-9a-f]{12}", nogit) is not None and nogit2 != nogit and nogit2.startswith("src-"), f"{nogit} {nogit2}")
        git("init", "-q")
        git("add", "-A")
        git("commit", "-qm", "one")
        sha = git("rev-parse", "--short=12", "HEAD")
        clean = tag()
        R.check("image-tag: clean tree -> git-<12-hex commit>", clean == f"git-{sha}", clean)
        (repo / "a.txt").write_text("two\n")
        d1, d1_again = tag(), tag()
        (repo / "a.txt").write_text("three\n")
        d2 = tag()
        R.check("image-tag: uncommitted change -> git-<commit>-dirty-<hash>, stable for the same content, new for new content",
                re.fullmatch(rf"git-{sha}-dirty-[0-9a-f]{{12}}", d1) is not None and d1 == d1_again and d2 != d1
                and d2.startswith(f"git-{sha}-dirty-"), f"{d1} {d1_again} {d2}")
        (repo / "a.txt").write_text("one\n")
        (repo / "new.txt").write_text("x\n")
        u1 = tag()
        (repo / "new.txt").write_text("y\n")
        u2 = tag()
        (repo / "new.txt").unlink()
        R.check("image-tag: untracked files count, by content; back to the committed tree -> the clean tag again",
                u1.startswith(f"git-{sha}-dirty-") and u2.startswith(f"git-{sha}-dirty-") and u1 != u2 and tag() == clean,
                f"{u1} {u2}")
        R.check("image-tag: the tag is a valid image tag and label value (<= 63 chars)",
                all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}", t) for t in (clean, d1, u1, nogit)))

    # `make image kind-load helm-install` with docker, kind, helm, kubectl and minikube stubbed:
    # one tag from build to install.
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = pathlib.Path(tmp)
        stub_bin(tmpd, ("docker", "kind", "helm", "kubectl", "minikube"))
        log = tmpd / "calls.log"
        ref_file = tmpd / "image-ref"
        env = clean_env(PATH=f"{tmpd}:{os.environ.get('PATH', '')}", STUB_LOG=str(log))

        def make(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), f"IMAGE_REF_FILE={ref_file}", *args],
                                  env=env, capture_output=True, text=True, timeout=120)

        missing = make("kind-load")
        R.check("make: kind-load before any `make image` fails and says to run `make image`",
                missing.returncode != 0 and "make image" in missing.stderr, missing.stderr[-300:])
        expected_tag = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=clean_env()).stdout.strip()
        run = make("image", "kind-load", "helm-install", "minikube-load")
        calls = log.read_text().splitlines() if log.exists() else []
        build = next((c for c in calls if c.startswith("docker build")), "")
        built = re.search(r"-t (\S+)", build)
        ref = built.group(1) if built else ""
        helm_call = next((c for c in calls if c.startswith("helm upgrade --install")), "")
        R.check("make image: docker build -t jobsched:<tag of deploy/kind/image-tag.sh>, recorded for the next targets",
                run.returncode == 0 and ref == f"jobsched:{expected_tag}" and ref_file.exists() and ref_file.read_text().strip() == ref,
                f"rc {run.returncode}; {build}; {run.stderr[-300:]}")
        R.check("make kind-load / minikube-load: load that same image",
                f"kind load docker-image {ref} --name jobsched" in calls and f"minikube image load {ref}" in calls, str(calls))
        R.check("make helm-install: --set image.repository=jobsched --set image.tag=<that tag>, with values-kind.yaml, --wait",
                f"--set image.repository=jobsched --set image.tag={expected_tag}" in helm_call
                and "-f deploy/kind/values-kind.yaml" in helm_call and "--wait" in helm_call, helm_call)
        crd_call = next((i for i, c in enumerate(calls) if c.startswith("kubectl apply --server-side") and "charts/jobsched/crds/" in c), None)
        R.check("make helm-install: applies the chart's CRDs server-side (make crd-apply) before helm upgrade",
                crd_call is not None and helm_call in calls and crd_call < calls.index(helm_call), str(calls))
        log.unlink(missing_ok=True)
        explicit = make("helm-install", "IMAGE=registry.example.com:5000/jobsched", "IMAGE_TAG=v2")
        calls = log.read_text().splitlines() if log.exists() else []
        R.check("make helm-install IMAGE=host:port/repo IMAGE_TAG=v2 -> --set image.repository=host:port/repo --set image.tag=v2",
                explicit.returncode == 0 and any("--set image.repository=registry.example.com:5000/jobsched --set image.tag=v2" in c for c in calls),
                str(calls))
        log.unlink(missing_ok=True)
        crd = make("crd-apply")
        calls = log.read_text().splitlines() if log.exists() else []
        R.check("make crd-apply: kubectl apply --server-side --force-conflicts -f charts/jobsched/crds/, then waits for Established",
                crd.returncode == 0 and calls[:1] == ["kubectl apply --server-side --force-conflicts -f charts/jobsched/crds/"]
                and any(c.startswith("kubectl wait --for=condition=Established") for c in calls), str(calls))


def render_scheduler_plan(live: dict | None, upgrade: bool, values: dict | None = None) -> list[dict]:
    """SchedulerConfigs the chart's decision template renders for a given object in the cluster
    (`live`, what lookup would return), in a scratch copy of the chart (lookup itself is always
    empty offline)."""
    with tempfile.TemporaryDirectory() as tmp:
        dst = pathlib.Path(tmp) / "jobsched"
        shutil.copytree(CHART, dst)
        (dst / "templates/schedulerconfig.yaml").unlink()
        raw = json.dumps(live or {})
        assert "`" not in raw
        (dst / "templates/zz-plan.yaml").write_text(
            '{{- include "jobsched.schedulerConfig.manifest" (dict "ctx" $ "live" (fromJson `%s`)) }}\n' % raw)
        return [d for d in render_release(values or {}, upgrade=upgrade, chart_dir=dst) if d["kind"] == "SchedulerConfig"]


def day1_scheduler_config(crd: CRD) -> None:
    """2. One owner: Helm creates the SchedulerConfig at install, kubectl owns it afterwards."""
    values = {"scheduler": {"policy": "priority", "quantumSeconds": 2, "paused": True}}
    inst = [d for d in render_release(values) if d["kind"] == "SchedulerConfig"]
    ann = (inst[0]["metadata"].get("annotations") or {}) if inst else {}
    R.check("schedulerconfig: install renders it once, as a post-install hook (not a release resource), spec from scheduler.*",
            len(inst) == 1 and ann.get("helm.sh/hook") == "post-install" and ann.get("helm.sh/hook-delete-policy") == "before-hook-creation"
            and inst[0]["spec"] == {"policy": "priority", "paused": True},
            str(inst))
    if inst:
        errors = validate_custom_object(strip_meta(inst[0]), crd)
        R.check("schedulerconfig: the hook object matches the CRD schema", not errors, "; ".join(errors))
    for label, v in (("same values", values), ("changed scheduler.policy", merge(values, {"scheduler": {"policy": "sjf"}}))):
        upg = [d for d in render_release(v, upgrade=True) if d["kind"] == "SchedulerConfig"]
        R.check(f"schedulerconfig: `helm upgrade` ({label}) renders no SchedulerConfig, so it never re-applies over kubectl's changes",
                not upg, str(upg))
    off = [d for d in render_release({"scheduler": {"create": False}}) if d["kind"] == "SchedulerConfig"]
    R.check("schedulerconfig: scheduler.create=false never renders it", not off)

    kubectl_obj = {"apiVersion": "jobsched.io/v1alpha1", "kind": "SchedulerConfig",
                   "metadata": {"name": f"{RELEASE}-jobsched", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                   "spec": {"policy": "round_robin", "roundRobin": {"quantumSeconds": 3}, "paused": False}}
    hook_obj = merge(kubectl_obj, {"metadata": {"annotations": {"helm.sh/hook": "post-install"}}})
    legacy = merge(kubectl_obj, {"metadata": {"annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE}}})
    other_release = merge(legacy, {"metadata": {"annotations": {"meta.helm.sh/release-name": "someone-else"}}})
    cases = (
        ("install, none in the cluster: post-install hook from the values", None, False, "post-install", values["scheduler"]["policy"]),
        ("install, one already exists (left by an earlier release or applied first): kept, nothing rendered", kubectl_obj, False, None, None),
        ("upgrade, kubectl-applied object: nothing rendered", kubectl_obj, True, None, None),
        ("upgrade, object created by the install hook: nothing rendered", hook_obj, True, None, None),
        ("upgrade, none (deleted with kubectl): not re-created", None, True, None, None),
        ("upgrade from a chart that had it as a release resource: post-upgrade hook re-creates it with its live spec",
         legacy, True, "post-upgrade", "round_robin"),
        ("upgrade, a release resource of another release: nothing rendered", other_release, True, None, None),
    )
    for label, live, upgrade, event, policy in cases:
        try:
            got = render_scheduler_plan(live, upgrade, values)
        except helm.HelmError as e:
            R.check(f"schedulerconfig plan: {label}", False, str(e))
            continue
        if event is None:
            R.check(f"schedulerconfig plan: {label}", not got, str(got))
        else:
            a = (got[0]["metadata"].get("annotations") or {}) if got else {}
            spec_ok = got and got[0]["spec"]["policy"] == policy and (live is None or got[0]["spec"] == live["spec"])
            R.check(f"schedulerconfig plan: {label}", len(got) == 1 and a.get("helm.sh/hook") == event and bool(spec_ok), str(got))

    texts = {p: (ROOT / p).read_text() for p in ("docs/kubernetes.md", "charts/jobsched/README.md", "deploy/minikube.md")}
    texts["NOTES.txt"] = (CHART / "templates/NOTES.txt").read_text()
    stale = [p for p, t in texts.items() if re.search(r"--set scheduler\.policy|--reuse-values", t)]
    R.check("schedulerconfig: no doc recommends `helm upgrade --set scheduler.policy=...` or --reuse-values any more", not stale, str(stale))
    R.check("schedulerconfig: docs/kubernetes.md and the chart README state the owner model (post-install hook, then kubectl)",
            all("post-install" in texts[p] and "kubectl" in texts[p] for p in ("docs/kubernetes.md", "charts/jobsched/README.md")))


def day1_storage() -> None:
    """3. Storage that binds on kind/minikube by default."""
    docs = expect_render("persistence.enabled=true with defaults", {"persistence": {"enabled": True}})
    pvc = docs and find(docs, "PersistentVolumeClaim", "-data")
    R.check("storage: persistence.enabled=true defaults to a ReadWriteOnce claim (kind local-path and minikube hostPath bind it)",
            bool(pvc) and pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in pvc["spec"],
            str(pvc and pvc["spec"]))
    with helm.Chart.load(str(CHART)) as chart:
        notes = chart.render({"persistence": {"enabled": True}}, name=RELEASE, namespace=NAMESPACE, is_install=True).get("jobsched/templates/NOTES.txt", "")
    R.check("storage: NOTES warn that a ReadWriteOnce claim keeps the API and workers on one node", "one node" in notes and "ReadWriteMany" in notes)
    docs = expect_render("persistence with ReadWriteMany and a storage class", {"persistence": {"enabled": True, "accessModes": ["ReadWriteMany"], "storageClass": "nfs-client"}})
    pvc = docs and find(docs, "PersistentVolumeClaim", "-data")
    R.check("storage: accessModes=[ReadWriteMany] and storageClass pass through", bool(pvc) and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
            and pvc["spec"].get("storageClassName") == "nfs-client")
    text = (ROOT / "docs/kubernetes.md").read_text() + (CHART / "README.md").read_text()
    R.check("storage: docs name ReadWriteOnce as the default, ReadWriteMany storage classes for spreading workers, and the one-node binding",
            all(s in text for s in ("ReadWriteOnce", "ReadWriteMany", "one node")))


def day1_autoscaling() -> None:
    """3 (issue 19). Workers scale on the backlog with KEDA, from zero, by Prometheus or Postgres."""
    text = (ROOT / "docs/kubernetes.md").read_text()
    prom_addr = "http://prometheus-operated.monitoring:9090"
    prom = {"worker": {"keda": {"enabled": True, "prometheus": {"serverAddress": prom_addr}}},
            "networkPolicy": {"enabled": True}}
    docs = expect_render("worker.keda.enabled with the Prometheus trigger", prom) or []
    so = find(docs, "ScaledObject", "-worker")
    dep = find(docs, "Deployment", "-worker")
    R.check("autoscaling: a keda.sh/v1alpha1 ScaledObject scales the worker Deployment from 0 to 10",
            bool(so and dep) and so["apiVersion"] == "keda.sh/v1alpha1"
            and so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]}
            and so["spec"]["minReplicaCount"] == 0 and so["spec"]["maxReplicaCount"] == 10, str(so))
    trig = (so or {}).get("spec", {}).get("triggers", [{}])[0]
    meta = trig.get("metadata", {})
    R.check("autoscaling: Prometheus trigger on the sum over queues of max(jobsched_backlog_seconds) of this release's API, a Value target of "
            "targetBacklogSeconds, activation at activationBacklogSeconds",
            trig.get("type") == "prometheus" and trig.get("metricType") == "Value" and meta.get("serverAddress") == prom_addr
            and "sum(max by (queue) (jobsched_backlog_seconds{" in meta.get("query", "") and f'namespace="{NAMESPACE}"' in meta.get("query", "")
            and f'service="{dep["metadata"]["name"].removesuffix("-worker")}-api-metrics"' in meta.get("query", "")
            and float(meta.get("threshold", "nan")) == 30.0 and float(meta.get("activationThreshold", "nan")) == 0.0, str(trig))
    metrics_src = (ROOT / "crates/metrics/src/lib.rs").read_text()
    R.check("autoscaling: jobsched_backlog_seconds and jobsched_backlog_jobs are metrics the code exports",
            '"jobsched_backlog_seconds"' in metrics_src and '"jobsched_backlog_jobs"' in metrics_src)
    R.check("autoscaling: with KEDA the worker Deployment leaves replicas to it, and the chart makes no HPA of its own",
            bool(dep) and "replicas" not in dep["spec"] and find(docs, "HorizontalPodAutoscaler", "-worker") is None)
    postgres = find(docs, "StatefulSet", "-postgresql")
    keda_pod = {"app": "keda-operator"}
    R.check("autoscaling: with the Prometheus trigger KEDA gets no way into Postgres",
            bool(postgres) and not np_allows(docs, postgres, 5432, "keda", keda_pod))

    pg_values = merge(prom, {"worker": {"concurrency": 6, "keda": {"trigger": "postgresql", "targetBacklogSeconds": 20,
                                                                   "activationBacklogSeconds": 1}}})
    docs = expect_render("worker.keda with the Postgres trigger", pg_values) or []
    so = find(docs, "ScaledObject", "-worker")
    trig = (so or {}).get("spec", {}).get("triggers", [{}])[0]
    meta = trig.get("metadata", {})
    worker_env = env_of(container(find(docs, "Deployment", "-worker"), "worker") or {})
    store_src = " ".join((ROOT / "crates/store/sql/postgres/backlog.sql").read_text().split())
    R.check("autoscaling: Postgres trigger sums the PENDING estimates (the store's backlog query) over workers of "
            "targetBacklogSeconds × concurrency slots, connecting with the workers' JOBSCHED_DATABASE_URL",
            trig.get("type") == "postgresql" and trig.get("metricType") == "AverageValue"
            and meta.get("connectionFromEnv") == "JOBSCHED_DATABASE_URL" and "JOBSCHED_DATABASE_URL" in worker_env
            and "sum(est)" in meta.get("query", "")
            and meta.get("query", "").endswith("FROM job_counts WHERE status = 'PENDING'")
            and "sum(est)" in store_src and "FROM job_counts WHERE status = 'PENDING'" in store_src
            and float(meta.get("targetQueryValue", "nan")) == 120.0 and float(meta.get("activationTargetQueryValue", "nan")) == 1.0,
            str(trig))
    postgres = find(docs, "StatefulSet", "-postgresql")
    R.check("autoscaling: with the Postgres trigger the bundled Postgres' NetworkPolicy lets the KEDA operator's namespace in, and "
            "no other namespace", bool(postgres) and np_allows(docs, postgres, 5432, "keda", keda_pod)
            and not np_allows(docs, postgres, 5432, "other", keda_pod))
    docs = expect_render("worker.keda with the Postgres trigger, KEDA in namespace autoscalers",
                         merge(pg_values, {"worker": {"keda": {"postgresql": {"operatorNamespace": "autoscalers"}}}})) or []
    postgres = find(docs, "StatefulSet", "-postgresql")
    R.check("autoscaling: worker.keda.postgresql.operatorNamespace names the namespace let in",
            bool(postgres) and np_allows(docs, postgres, 5432, "autoscalers", keda_pod) and not np_allows(docs, postgres, 5432, "keda", keda_pod))

    expect_render_failure("KEDA and the HPA together", merge(prom, {"worker": {"autoscaling": {"enabled": True}}}),
                          ("worker.autoscaling.enabled=false",))
    R.check("autoscaling: the kind loop takes the KEDA settings (make helm-install HELM_ARGS=...)",
            "$(HELM_ARGS)" in (ROOT / "Makefile.packaging").read_text() and "HELM_ARGS=" in text)
    expect_render_failure("KEDA's Prometheus trigger without a server", {"worker": {"keda": {"enabled": True}}},
                          ("worker.keda.prometheus.serverAddress",))
    expect_render_failure("KEDA with a target of 0 s", merge(prom, {"worker": {"keda": {"targetBacklogSeconds": 0}}}),
                          ("targetBacklogSeconds",))
    R.check("autoscaling: docs/kubernetes.md walks from kind create cluster to a KEDA-scaled worker pool",
            all(s in text for s in ("kind create cluster", "ScaledObject", "jobsched_backlog_seconds", "worker.keda.enabled", "helm install keda")))


def np_allows(docs: list[dict], target: dict, port: int, peer_ns: str, peer_labels: dict) -> bool:
    """Whether the rendered NetworkPolicies let a pod (namespace peer_ns, labels peer_labels)
    reach `port` of the workload `target` (ingress only; ipBlock peers never match a pod)."""
    labels = pod_template_labels(target)
    ports = container_ports(pod_spec(target))
    selecting = [np for np in docs if np["kind"] == "NetworkPolicy" and selects(np["spec"]["podSelector"], labels)
                 and "Ingress" in np["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True
    for np in selecting:
        for rule in np["spec"].get("ingress") or []:
            rule_ports = rule.get("ports")
            if rule_ports and not any((ports.get(p["port"]) if isinstance(p["port"], str) else p["port"]) == port for p in rule_ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    continue
                ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
                ns_ok = peer_ns == NAMESPACE if ns_sel is None else selects(ns_sel, {"kubernetes.io/metadata.name": peer_ns})
                if ns_ok and (pod_sel is None or selects(pod_sel, peer_labels)):
                    return True
    return False


def day1_metrics() -> None:
    """4. Scraped once; Prometheus reaches the API metrics behind apiIngressFrom; a dashboard per release."""
    for name, values in list(SCENARIOS.items()) + [("serviceMonitor + podAnnotations", {"metrics": {"serviceMonitor": {"enabled": True}}})]:
        docs = render_docs(values)[0] or []
        pods = {kn(w): (w["spec"]["template"]["metadata"].get("annotations") or {}) if w["kind"] not in ("Pod", "CronJob") else {}
                for w in docs if w["kind"] in WORKLOAD_KINDS}
        annotated_svcs = [kn(s) for s in docs if s["kind"] == "Service"
                          and any(k.startswith("prometheus.io/") for k in (s["metadata"].get("annotations") or {}))]
        doubled = [f"{kn(s)} + {kn(w)}" for s in docs if s["kind"] == "Service" and "prometheus.io/scrape" in (s["metadata"].get("annotations") or {})
                   for w in docs if w["kind"] in WORKLOAD_KINDS and selects(s["spec"].get("selector", {}), pod_template_labels(w))
                   and "prometheus.io/scrape" in pods.get(kn(w), {})]
        R.check(f"metrics: [{name}] prometheus.io annotations on no Service, so no Service/pod pair is scraped twice",
                not annotated_svcs and not doubled, f"{annotated_svcs} {doubled}")
    docs = render_docs({})[0] or []
    want = {"-api": "9090", "-worker": "9090", "-controller": "9090"}
    got = {sfx: (find(docs, "Deployment", sfx)["spec"]["template"]["metadata"].get("annotations") or {}) for sfx in want}
    R.check("metrics: API, worker and controller pods carry prometheus.io/scrape, /port (their metrics port) and /path",
            all(a.get("prometheus.io/scrape") == "true" and a.get("prometheus.io/port") == want[s] and a.get("prometheus.io/path") == "/metrics"
                for s, a in got.items()), str(got))

    prom_ns, prom_labels = "monitoring", {"app.kubernetes.io/name": "prometheus"}
    nginx_ns = "ingress-nginx"
    test_labels = {"app.kubernetes.io/name": "jobsched", "app.kubernetes.io/instance": RELEASE, "app.kubernetes.io/component": "test"}
    api_only = {"networkPolicy": {"enabled": True, "apiIngressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": nginx_ns}}}]}}
    both = merge(api_only, {"networkPolicy": {"metricsIngressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": prom_ns}}}]}})
    for label, values, metrics_port in (("apiIngressFrom only", api_only, 9090),
                                        ("apiIngressFrom + metricsIngressFrom", both, 9090),
                                        ("apiIngressFrom + metricsIngressFrom, api.metricsPort=9100", merge(both, {"api": {"metricsPort": 9100}}), 9100)):
        docs = expect_render(f"NetworkPolicy ({label})", values)
        if docs is None:
            continue
        api, worker, ctrl = (find(docs, "Deployment", s) for s in ("-api", "-worker", "-controller"))
        R.check(f"networkpolicy: [{label}] Prometheus (namespace {prom_ns}) reaches the API metrics port {metrics_port}, the worker and controller metrics",
                np_allows(docs, api, metrics_port, prom_ns, prom_labels) and np_allows(docs, worker, 9090, prom_ns, prom_labels)
                and np_allows(docs, ctrl, 9090, prom_ns, prom_labels))
        R.check(f"networkpolicy: [{label}] the API REST port admits ingress-nginx and the helm test pod, not Prometheus or another pod",
                np_allows(docs, api, 8000, nginx_ns, {}) and np_allows(docs, api, 8000, NAMESPACE, test_labels)
                and not np_allows(docs, api, 8000, prom_ns, prom_labels) and not np_allows(docs, api, 8000, NAMESPACE, {"app": "other"}))
        if "metricsIngressFrom" in values["networkPolicy"]:
            R.check(f"networkpolicy: [{label}] metrics ports closed to pods outside metricsIngressFrom",
                    not np_allows(docs, api, metrics_port, "default", {}) and not np_allows(docs, worker, 9090, "default", {}))

    sm_docs = render_docs({"metrics": {"serviceMonitor": {"enabled": True}}})[0] or []
    sm = find(sm_docs, "ServiceMonitor", "")
    R.check("metrics: the ServiceMonitor's job label is the release name (jobLabel app.kubernetes.io/instance), the dashboard's `job`",
            bool(sm) and sm["spec"].get("jobLabel") == "app.kubernetes.io/instance"
            and all(s["metadata"]["labels"].get("app.kubernetes.io/instance") == RELEASE for s in sm_docs
                    if s["kind"] == "Service" and selects(sm["spec"]["selector"], s["metadata"]["labels"])))

    dash = json.loads((ROOT / "deploy/grafana/jobsched-dashboard.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    R.check("dashboard: template variables namespace, job and instance (Prometheus label_values queries on jobsched metrics)",
            all(variables.get(n, {}).get("type") == "query" and f", {n})" in json.dumps(variables[n].get("query"))
                and "jobsched_" in json.dumps(variables[n].get("query")) for n in ("namespace", "job", "instance")),
            str(sorted(variables)))
    R.check("dashboard: namespace and job are single-valued (one release at a time), instance multi-valued with All = .*",
            variables.get("namespace", {}).get("multi") is False and variables.get("job", {}).get("multi") is False
            and variables.get("instance", {}).get("multi") is True and variables.get("instance", {}).get("allValue") == ".*")
    exprs: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                exprs.append(x) if k == "expr" else walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(dash["panels"])
    need = ('namespace=~"$namespace"', 'job=~"$job"', 'instance=~"$instance"')
    unfiltered = []
    for e in exprs:
        for m in re.finditer(r"(?<![A-Za-z0-9_:])jobsched_[A-Za-z0-9_]+(\{[^}]*\})?", e):
            if not m.group(1) or not all(n in m.group(1) for n in need):
                unfiltered.append(m.group(0))
    R.check(f"dashboard: every metric selector of all {len(exprs)} queries filters by $namespace, $job and $instance",
            len(exprs) >= 20 and not unfiltered, str(unfiltered[:5]))


def day1_gitops() -> None:
    """5. Pinned passwords and tokens for renders without lookup (Argo CD); existingSecret."""
    import urllib.parse

    pg_pw = "p@ss/w:rd with space+plus%"
    r_pw = "redis#pw?&=pinned-value"
    api_t, admin_t = "api-token-pinned-0123456789", "admin-token-pinned-0123456789"
    pinned = {"postgresql": {"password": pg_pw}, "redis": {"password": r_pw},
              "auth": {"enabled": True, "apiToken": api_t, "adminToken": admin_t}}
    first, second = render_docs(pinned)[0], render_docs(pinned)[0]
    if not first or not second:
        R.check("gitops: pinned values render", False, render_docs(pinned)[1])
        return
    url = secret_value(first, "-postgresql", "database-url") or ""
    parsed = urllib.parse.urlsplit(url)
    R.check("gitops: postgresql.password is used verbatim in the Secret, percent-encoded in the URL (decodes back to it)",
            secret_value(first, "-postgresql", "postgres-password") == pg_pw
            and urllib.parse.unquote(parsed.password or "") == pg_pw and parsed.hostname == f"{RELEASE}-jobsched-postgresql"
            and parsed.port == 5432 and parsed.path == "/jobsched" and parsed.username == "jobsched", url)
    rurl = secret_value(first, "-redis", "redis-url") or ""
    rparsed = urllib.parse.urlsplit(rurl)
    R.check("gitops: redis.password is used verbatim in the Secret, percent-encoded in the URL",
            secret_value(first, "-redis", "redis-password") == r_pw and urllib.parse.unquote(rparsed.password or "") == r_pw
            and rparsed.hostname == f"{RELEASE}-jobsched-redis" and rparsed.path == "/0", rurl)
    R.check("gitops: auth.apiToken and auth.adminToken are used verbatim in the generated auth Secret",
            secret_value(first, "-auth", "api-token") == api_t and secret_value(first, "-auth", "admin-token") == admin_t)
    R.check("gitops: with everything pinned two renders without lookup give identical Secrets (Argo CD sees no drift)",
            secret_values(first) == secret_values(second))
    partial = [render_docs({"postgresql": {"password": pg_pw}, "auth": {"enabled": True, "apiToken": api_t}})[0] or [] for _ in range(2)]
    gen = [(secret_value(d, "-redis", "redis-password"), secret_value(d, "-auth", "admin-token")) for d in partial]
    R.check("gitops: what is not pinned is still generated: random 32-character Redis password and admin token, new per render",
            all(v and re.fullmatch(r"[A-Za-z0-9]{32}", v) for pair in gen for v in pair)
            and gen[0][0] != gen[1][0] and gen[0][1] != gen[1][1]
            and all(secret_value(d, "-postgresql", "postgres-password") == pg_pw and secret_value(d, "-auth", "api-token") == api_t for d in partial))
    redis_sts = find(first, "StatefulSet", "-redis")
    R.check("gitops: a pinned Redis password still reaches redis-server only through the mounted Secret (not in args)",
            r_pw not in json.dumps(container(redis_sts, "redis")))
    for label, values, needle in (
        ("pinned password shorter than 16 characters", {"postgresql": {"password": "short"}}, "postgresql.password"),
        ("pinned token with a newline", {"auth": {"enabled": True, "apiToken": "0123456789abcdef\nx"}}, "auth.apiToken"),
        ("apiToken equal to adminToken", {"auth": {"enabled": True, "apiToken": api_t, "adminToken": api_t}}, "auth.adminToken"),
        ("apiToken with auth.existingSecret", {"auth": {"enabled": True, "existingSecret": "t", "apiToken": api_t}}, "auth.existingSecret"),
    ):
        expect_render_failure(f"gitops: {label}", values, (needle,))
    readme = (CHART / "README.md").read_text()
    docs_text = (ROOT / "docs/kubernetes.md").read_text()
    R.check("gitops: chart README and docs/kubernetes.md name existingSecret as the GitOps path and the values that pin passwords",
            all(s in t for t in (readme, docs_text) for s in ("existingSecret", "postgresql.password", "redis.password", "auth.apiToken", "Argo CD")))


def day1_crd_docs() -> None:
    """6. CRD upgrades: documented and a make target (checked with the Makefile above)."""
    text = (ROOT / "docs/kubernetes.md").read_text()
    i, j = text.find("make crd-apply"), text.find("helm upgrade", text.find("make crd-apply") + 1)
    R.check("crd: docs/kubernetes.md says to run `make crd-apply` (kubectl apply --server-side) before `helm upgrade`",
            i >= 0 and j > i and "kubectl apply --server-side" in text)
    readme = (CHART / "README.md").read_text()
    R.check("crd: the chart README points at make crd-apply", "make crd-apply" in readme)


def day1_hygiene(rendered: dict[str, list[dict]]) -> None:
    """7. helm test hook, pinned images, CI runs both checks."""
    for label, values in (("auth off", {}), ("auth on, generated Secret", {"auth": {"enabled": True}}),
                          ("auth.existingSecret, apiIngressFrom", {"auth": {"enabled": True, "existingSecret": "tok", "apiTokenKey": "k"},
                                                                  "networkPolicy": {"enabled": True, "apiIngressFrom": [{"podSelector": {"matchLabels": {"x": "y"}}}]}})):
        docs = expect_render(f"helm test hook ({label})", values)
        pod = docs and find(docs, "Pod", "-test-submit")
        if not pod:
            R.check(f"helm-test: [{label}] Pod rendered", False)
            continue
        ann = pod["metadata"].get("annotations") or {}
        c = pod["spec"]["containers"][0]
        env = {e["name"]: e for e in c.get("env", [])}
        R.check(f"helm-test: [{label}] a `helm.sh/hook: test` Pod, restartPolicy Never, deleted when it succeeded",
                ann.get("helm.sh/hook") == "test" and "hook-succeeded" in ann.get("helm.sh/hook-delete-policy", "")
                and pod["spec"]["restartPolicy"] == "Never")
        R.check(f"helm-test: [{label}] runs `jobsched submit sleep duration=0.1 --wait --timeout 60` in the jobsched image",
                c["image"] == f"jobsched:{CHART_APP_VERSION}" and c.get("command") is None
                and c["args"][:3] == ["submit", "sleep", "duration=0.1"] and "--wait" in c["args"]
                and c["args"][c["args"].index("--timeout") + 1] == "60", str(c["args"]))
        R.check(f"helm-test: [{label}] JOBSCHED_URL is the API Service URL",
                env.get("JOBSCHED_URL", {}).get("value") == f"http://{RELEASE}-jobsched-api.{NAMESPACE}.svc:8000", str(env.get("JOBSCHED_URL")))
        token = ((env.get("JOBSCHED_API_TOKEN") or {}).get("valueFrom") or {}).get("secretKeyRef")
        if label == "auth off":
            R.check(f"helm-test: [{label}] no token", token is None)
        else:
            want = ({"name": f"{RELEASE}-jobsched-auth", "key": "api-token"} if "generated" in label else {"name": "tok", "key": "k"})
            R.check(f"helm-test: [{label}] JOBSCHED_API_TOKEN from the auth Secret (env, not argv)", token == want, str(token))
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(strip_meta(pod), version, strict=True)
                R.check(f"helm-test: [{label}] Pod valid (strict) for Kubernetes {version}", True)
            except ValidationError as e:
                R.check(f"helm-test: [{label}] Pod valid (strict) for Kubernetes {version}", False, e.message)
        if "apiIngressFrom" in label:
            R.check(f"helm-test: [{label}] the API NetworkPolicy admits the test pod on the REST port",
                    np_allows(docs, find(docs, "Deployment", "-api"), 8000, NAMESPACE, pod["metadata"]["labels"]))

    bad = []
    for name, docs in rendered.items():
        for w, c in all_containers(docs):
            image = c.get("image") or ""
            last = image.rsplit("/", 1)[-1]
            tag = last.split("@")[0].partition(":")[2]
            if "@" not in last and (not tag or tag == "latest"):
                bad.append(f"[{name}] {kn(w)}/{c['name']}: {image!r}")
    R.check("images: no container in any scenario runs an image with an empty or `latest` tag", not bad, str(bad))
    v = merged_values({})
    R.check("images: Postgres and Redis default tags are pinned releases (major.minor[.patch]), not a floating major",
            re.fullmatch(r"\d+\.\d+(\.\d+)?", str(v["postgresql"]["image"]["tag"])) is not None
            and re.fullmatch(r"\d+\.\d+\.\d+", str(v["redis"]["image"]["tag"])) is not None,
            f'{v["postgresql"]["image"]["tag"]} {v["redis"]["image"]["tag"]}')

    # .ci/run: the tail after `make lint`, with `make` stubbed, for each outcome of test,
    # chart-check and fuzz.
    ci = (ROOT / ".ci/run").read_text()
    start = ci.find('echo "== make test"')
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = pathlib.Path(tmp)
        (tmpd / "make").write_text('#!/bin/sh\necho "make $*" >> "$STUB_LOG"\n'
                                   'case "$1" in test) echo "test result: ok. 1 passed; 0 failed; 0 ignored"; exit "$FAKE_TEST_RC";;\n'
                                   '  chart-check) exit "$FAKE_CHART_RC";;\n'
                                   '  fuzz) exit "$FAKE_FUZZ_RC";; esac\n')
        (tmpd / "make").chmod(0o755)
        # The binary `make test` builds, which the chart check and the fuzz run use.
        fake_bin = tmpd / "target" / "debug" / "jobsched"
        fake_bin.parent.mkdir(parents=True)
        fake_bin.write_text("#!/bin/sh\nexit 0\n")
        fake_bin.chmod(0o755)
        script = tmpd / "ci-tail.sh"
        script.write_text("set -euo pipefail\n" + ci[start:].replace("/tmp/jobsched-ci-test.log", str(tmpd / "test.log")))
        results = {}
        cases = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (101, 2, 0))
        for test_rc, chart_rc, fuzz_rc in cases:
            log = tmpd / "calls.log"
            log.unlink(missing_ok=True)
            env = clean_env(PATH=f"{tmpd}:{os.environ.get('PATH', '')}", STUB_LOG=str(log),
                            FAKE_TEST_RC=str(test_rc), FAKE_CHART_RC=str(chart_rc), FAKE_FUZZ_RC=str(fuzz_rc))
            r = subprocess.run(["bash", str(script)], cwd=tmpd, env=env, capture_output=True, text=True, timeout=60)
            calls = log.read_text().splitlines() if log.exists() else []
            results[(test_rc, chart_rc, fuzz_rc)] = (r.returncode, calls)
        R.check("ci: .ci/run runs make test, make chart-check and make fuzz in every case (also when one fails)",
                start >= 0 and all(calls == ["make test", "make chart-check", "make fuzz"] for _, calls in results.values()), str(results))
        R.check("ci: .ci/run exits 0 only when all three pass, non-zero when any fails",
                results[(0, 0, 0)][0] == 0 and all(results[k][0] != 0 for k in cases[1:]), str(results))


def section_day_one(crd: CRD, rendered: dict[str, list[dict]]) -> None:
    R.sections("day one", (
        ("1. image: a tag per build set by make helm-install, image.digest", day1_image),
        ("2. SchedulerConfig: created at install, then owned by kubectl", lambda: day1_scheduler_config(crd)),
        ("3. storage: ReadWriteOnce by default", day1_storage),
        ("3b. autoscaling on the backlog with KEDA, from zero", day1_autoscaling),
        ("4. metrics: scraped once, reachable behind apiIngressFrom, dashboard per release", day1_metrics),
        ("5. GitOps: pinned passwords and tokens", day1_gitops),
        ("6. CRD upgrades", day1_crd_docs),
        ("7. hygiene: helm test, pinned images, CI", lambda: day1_hygiene(rendered)),
    ))


def flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(values, dict) and values:
        for k, v in values.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    else:
        out[prefix] = values
    return out


# ------------------------------------------------------------------------------ sections


def section_tools() -> None:
    R.section("tools")
    print(f"  helm-python-sdk {helm.__version__} (Helm SDK {helm.helm_sdk_version()}), "
          f"kubernetes-validate {importlib.metadata.version('kubernetes-validate')}, "
          f"jsonschema {importlib.metadata.version('jsonschema')}, PyYAML {yaml.__version__}")
    print(f"  Kubernetes schema versions: {', '.join(KUBE_VERSIONS)}")


def section_schema() -> None:
    R.section("values.schema.json")
    gen = subprocess.run([sys.executable, str(HERE / "gen_schema.py"), "--check"])
    R.check("values.schema.json is what tests/chart/gen_schema.py generates", gen.returncode == 0,
            "run `python tests/chart/gen_schema.py` and commit the result")
    with helm.Chart.load(str(CHART)) as chart:
        for name, values in SCENARIOS.items():
            try:
                chart.validate_schema(values)
                R.check(f"[{name}] values pass the schema", True)
            except helm.HelmError as e:
                R.check(f"[{name}] values pass the schema", False, str(e))
        bad_cases = {
            "top-level typo `workr`": {"workr": {"replicas": 3}},
            "nested typo `worker.concurency`": {"worker": {"concurency": 3}},
            "typo `api.ingres`": {"api": {"ingres": {"enabled": True}}},
            "unknown policy": {"scheduler": {"policy": "lottery"}},
            "quantum 0": {"scheduler": {"quantumSeconds": 0}},
            "shutdownGrace as text": {"worker": {"shutdownGrace": "25s"}},
            "privileged escalation allowed": {"securityContext": {"allowPrivilegeEscalation": True}},
            "unknown migrations mode": {"migrations": {"mode": "job"}},
            "non-postgres external URL": {"externalDatabase": {"url": "mysql://x"}},
        }
        for label, values in bad_cases.items():
            try:
                chart.validate_schema(values)
                R.check(f"schema rejects {label}", False, "accepted")
            except helm.HelmValuesError:
                R.check(f"schema rejects {label}", True)
    # every key of values.yaml is described by the schema (additionalProperties: false would
    # otherwise reject the chart's own defaults) - covered by validate_schema({}) above.


def section_lint() -> None:
    R.section(f"helm lint (strict, kube {LINT_KUBE_VERSION})")
    for name, values in SCENARIOS.items():
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=LINT_KUBE_VERSION)
        bad = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report.get("errors", [])]
        for m in report["messages"]:
            if m["severity"] < 2:
                R.note(f"[{name}] lint info: {m['path']}: {m['error']}")
        R.check(f"[{name}] helm lint: no errors or warnings", not bad, "; ".join(str(m.get("error")) for m in bad))


def section_template_failures() -> None:
    R.section("misconfigurations fail with a message naming the fix")
    cases: list[tuple[str, dict, str]] = [
        ("in-chart Postgres off, no external database", {"postgresql": {"enabled": False}}, "externalDatabase.existingSecret"),
        ("in-chart Redis off, no external Redis", {"redis": {"enabled": False}}, "externalRedis.existingSecret"),
        ("both in-chart and external Postgres", {"externalDatabase": {"existingSecret": "x"}}, "postgresql.enabled=false"),
        ("hook migrations with the in-chart Postgres", {"migrations": {"mode": "hook"}}, "migrations.mode=auto or initContainer"),
        ("2 controllers without leader election", {"controller": {"replicas": 2, "leaderElection": False}}, "leader election"),
        ("HPA without a target", {"worker": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}}, "targetCPUUtilizationPercentage"),
    ]
    for label, values, needle in cases:
        try:
            render(values)
            R.check(f"render fails: {label}", False, "rendered without error")
        except helm.HelmError as e:
            R.check(f"render fails: {label}", needle in str(e), f"message lacks {needle!r}: {e}")


def section_render(crd: CRD) -> dict[str, list[dict]]:
    rendered: dict[str, list[dict]] = {}
    for name, values in SCENARIOS.items():
        R.section(f"render + validate: {name}")
        try:
            manifests = render(values)
        except helm.HelmError as e:
            R.check(f"[{name}] renders", False, str(e))
            continue
        docs = documents(manifests)
        R.check(f"[{name}] renders ({len(docs)} manifests)", bool(docs))
        rendered[name] = docs
        notes = manifests.get("jobsched/templates/NOTES.txt", "")
        R.check(f"[{name}] NOTES.txt explains the API, SchedulerConfig and status", all(s in notes for s in ("curl", "kind: SchedulerConfig", "kubectl", "get schedulerconfigs")))
        app_version = str(merged_values(values)["image"]["tag"] or helm.Chart.load(str(CHART)).metadata["appVersion"])
        skipped: set[str] = set()
        seen: set[str] = set()
        dupes = []
        for doc in docs:
            key = f"{doc['kind']}/{doc['metadata'].get('namespace', NAMESPACE)}/{doc['metadata']['name']}"
            if key in seen:
                dupes.append(key)
            seen.add(key)
            kube_validate(doc, crd, name, skipped)
            check_labels(doc, name, app_version)
            if doc["kind"] in WORKLOAD_KINDS:
                check_workload_security(doc, name)
            if doc["kind"] != "Namespace" and doc["kind"] not in ("ServiceMonitor", "ConfigMap"):
                if doc["metadata"].get("namespace") != NAMESPACE:
                    dupes.append(f"{kn(doc)} not in the release namespace")
        R.check(f"[{name}] names unique and namespaced to the release", not dupes, "; ".join(dupes))
        v = merged_values(values)
        ext_secrets = {s for s in (v["externalDatabase"]["existingSecret"], v["externalRedis"]["existingSecret"], v["auth"]["existingSecret"]) if s}
        ext_claims = {v["persistence"]["existingClaim"]} if v["persistence"]["existingClaim"] else set()
        check_references(docs, name, ext_secrets, ext_claims)
    return rendered


def section_crd() -> CRD:
    R.section("SchedulerConfig CRD")
    for name in ("jobschedules.yaml",):
        chart_copy, source = CHART / "crds" / name, ROOT / "deploy/crds" / name
        R.check(f"charts/jobsched/crds/{name} is byte-for-byte deploy/crds/{name}",
                chart_copy.exists() and source.exists() and chart_copy.read_bytes() == source.read_bytes(),
                f"generate deploy/crds/{name} with `jobsched crd jobschedules` and copy it into charts/jobsched/crds/")
    chart_crd_path = CHART / "crds/schedulerconfigs.yaml"
    deploy_crd_path = ROOT / "deploy/crds/schedulerconfigs.yaml"
    chart_bytes = chart_crd_path.read_bytes()
    if deploy_crd_path.exists():
        R.check(
            "charts/jobsched/crds/schedulerconfigs.yaml is byte-for-byte deploy/crds/schedulerconfigs.yaml",
            chart_bytes == deploy_crd_path.read_bytes(),
            "copy deploy/crds/schedulerconfigs.yaml over the chart's copy",
        )
    else:
        R.check("deploy/crds/schedulerconfigs.yaml exists (source of the chart's CRD)", False,
                "missing: generate it with `jobsched crd > deploy/crds/schedulerconfigs.yaml`")
    binary = os.environ.get("JOBSCHED_BIN")
    if binary:
        try:
            out = subprocess.run([binary, "crd"], capture_output=True, check=True, timeout=60).stdout
            R.check(f"`{binary} crd` output is byte-for-byte the chart's CRD", out == chart_bytes,
                    "regenerate: `jobsched crd > deploy/crds/schedulerconfigs.yaml` and copy it into charts/jobsched/crds/")
        except subprocess.CalledProcessError as e:
            stderr = e.stderr.decode(errors="replace").strip().splitlines()
            R.check(f"`{binary} crd` runs", False, f"exit {e.returncode}: {stderr[0] if stderr else ''}")
        except (OSError, subprocess.SubprocessError) as e:
            R.check(f"`{binary} crd` runs", False, str(e))
    else:
        R.note("JOBSCHED_BIN not set: `jobsched crd` output not compared (set it to a built binary)")
    docs = [d for d in yaml.safe_load_all(chart_bytes) if d]
    R.check("the chart's CRD file holds exactly one document", len(docs) == 1, f"{len(docs)} documents")
    doc = docs[0]
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            R.check(f"CRD valid (strict) for Kubernetes {version}", True)
        except ValidationError as e:
            R.check(f"CRD valid (strict) for Kubernetes {version}", False, f"{'.'.join(map(str, e.path))}: {e.message}")
    spec = doc.get("spec", {})
    R.check(
        "CRD: jobsched.io SchedulerConfig, namespaced, v1alpha1 served and stored",
        doc.get("metadata", {}).get("name") == "schedulerconfigs.jobsched.io" and spec.get("group") == "jobsched.io"
        and spec.get("names", {}).get("kind") == "SchedulerConfig" and spec.get("scope") == "Namespaced"
        and any(v["name"] == "v1alpha1" and v.get("served") and v.get("storage") for v in spec.get("versions", [])),
    )
    crd = CRD(doc)
    v = crd.versions.get("v1alpha1", {})
    R.check("CRD has the status subresource (the controller patches schedulerconfigs/status)", "status" in (v.get("subresources") or {}))
    good = {"apiVersion": "jobsched.io/v1alpha1", "kind": "SchedulerConfig", "metadata": {"name": "x"},
            "spec": {"policy": "round_robin", "roundRobin": {"quantumSeconds": 0.5}, "paused": False}}
    R.check("CRD schema accepts a valid SchedulerConfig", not validate_custom_object(good, crd), "; ".join(validate_custom_object(good, crd)))
    for label, mutate in {
        "unknown policy": lambda d: d["spec"].__setitem__("policy", "lottery"),
        "quantumSeconds 0": lambda d: d["spec"]["roundRobin"].__setitem__("quantumSeconds", 0),
        "paused as text": lambda d: d["spec"].__setitem__("paused", "yes"),
        "unknown spec field": lambda d: d["spec"].__setitem__("polcy", "fcfs"),
    }.items():
        bad = copy.deepcopy(good)
        mutate(bad)
        R.check(f"CRD schema rejects {label}", bool(validate_custom_object(bad, crd)))

    # CEL rules (x-kubernetes-validations), evaluated with a CEL interpreter since no API server
    # runs here.
    spec_node = v["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec_node.get("x-kubernetes-validations", [])] + [
        r["rule"] for r in spec_node["properties"]["roundRobin"].get("x-kubernetes-validations", [])]
    R.check("CRD has CEL rules: roundRobin only with round_robin, quantum bounds", len(rules) == 2, str(rules))
    queues_node = spec_node["properties"]["queues"]
    R.check("spec.queues is a list map keyed by name, each entry with a CEL rule refusing `default`",
            queues_node.get("x-kubernetes-list-type") == "map" and queues_node.get("x-kubernetes-list-map-keys") == ["name"]
            and len(queues_node["items"].get("x-kubernetes-validations", [])) == 1, str(queues_node))
    for label, spec_value in {
        "round_robin with a quantum": {"policy": "round_robin", "roundRobin": {"quantumSeconds": 0.5}},
        "round_robin with an integer quantum (a double to CEL, as the schema types it)": {"policy": "round_robin", "roundRobin": {"quantumSeconds": 5}},
        "round_robin at the bounds": {"policy": "round_robin", "roundRobin": {"quantumSeconds": 86400}},
        "round_robin without roundRobin": {"policy": "round_robin"},
        "priority without roundRobin": {"policy": "priority", "paused": True},
        "named queues": {"policy": "fcfs", "queues": [{"name": "emails", "policy": "sjf", "weight": 3, "concurrencyLimit": 5}]},
    }.items():
        errors = cel_errors({"spec": spec_value}, crd)
        R.check(f"CEL admits {label}", not errors, "; ".join(errors))
    for label, spec_value, needle in (
        ("roundRobin with policy priority", {"policy": "priority", "roundRobin": {"quantumSeconds": 2}}, "only applies to policy round_robin"),
        ("roundRobin with policy fcfs", {"policy": "fcfs", "roundRobin": {}}, "only applies to policy round_robin"),
        ("a quantum of 0.001 s", {"policy": "round_robin", "roundRobin": {"quantumSeconds": 0.001}}, "from 0.01 to 86400"),
        ("a quantum of 86401 s", {"policy": "round_robin", "roundRobin": {"quantumSeconds": 86401}}, "from 0.01 to 86400"),
        ("the default queue in spec.queues", {"policy": "fcfs", "queues": [{"name": "emails"}, {"name": "default"}]}, "cannot name the default queue"),
    ):
        errors = cel_errors({"spec": spec_value}, crd)
        R.check(f"CEL rejects {label}, naming the field and the rule", any(needle in e for e in errors), "; ".join(errors) or "admitted")
    conditions = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    item = conditions["items"]
    R.check("status.conditions is shaped as metav1.Condition: a list map keyed by type, the standard required fields and bounds",
            conditions.get("x-kubernetes-list-type") == "map" and conditions.get("x-kubernetes-list-map-keys") == ["type"]
            and set(item.get("required", [])) == {"type", "status", "reason", "message", "lastTransitionTime"}
            and item["properties"]["status"].get("enum") == ["True", "False", "Unknown"]
            and item["properties"]["reason"].get("pattern") and item["properties"]["type"].get("maxLength") == 316
            and item["properties"]["message"].get("maxLength") == 32768, str(conditions))
    return crd


def section_dashboard() -> None:
    R.section("Grafana dashboard")
    chart_copy = CHART / "dashboards/jobsched-dashboard.json"
    source = ROOT / "deploy/grafana/jobsched-dashboard.json"
    try:
        json.loads(chart_copy.read_text())
        R.check("chart dashboard is valid JSON", True)
    except ValueError as e:
        R.check("chart dashboard is valid JSON", False, str(e))
    if source.exists():
        R.check("charts/jobsched/dashboards/jobsched-dashboard.json is identical to deploy/grafana/jobsched-dashboard.json",
                chart_copy.read_bytes() == source.read_bytes(), "copy deploy/grafana/jobsched-dashboard.json into the chart")
    else:
        R.check("deploy/grafana/jobsched-dashboard.json exists (source of the chart's dashboard)", False, "missing")


def section_docs() -> None:
    R.section("chart README lists every value")
    readme = (CHART / "README.md").read_text()
    values = flatten(load_yaml(CHART / "values.yaml"))

    def documented(key: str) -> bool:
        parts = key.split(".")
        return any(f"| `{'.'.join(parts[:i])}` |" in readme for i in range(len(parts), 0, -1))

    missing = [k for k in values if not documented(k)]
    R.check(f"all {len(values)} values of values.yaml are in the charts/jobsched/README.md table", not missing, f"undocumented: {missing}")
    gen = subprocess.run([sys.executable, str(HERE / "gen_values_doc.py"), "--check"])
    R.check("README values table matches the values.yaml comments", gen.returncode == 0,
            "run `python tests/chart/gen_values_doc.py`")
    for doc in ("docs/kubernetes.md", "deploy/minikube.md"):
        path = ROOT / doc
        text = path.read_text() if path.exists() else ""
        R.check(f"{doc} covers install, kubectl apply of a SchedulerConfig and curl through the ingress",
                all(s in text for s in ("helm upgrade --install", "kind: SchedulerConfig", "kubectl -n jobsched apply", "curl --resolve jobsched.localhost")))


def section_packaging() -> None:
    R.section("packaging files")
    compose = load_yaml(ROOT / "deploy/docker-compose.yml")
    services = compose.get("services", {})
    R.check("compose: postgres, redis, migrate, api, worker services",
            sorted(services) == ["api", "migrate", "postgres", "redis", "worker"], str(sorted(services)))
    R.check("compose: postgres:16 and redis:7", services.get("postgres", {}).get("image") == "postgres:16" and services.get("redis", {}).get("image") == "redis:7")
    R.check("compose: worker runs 2 replicas by default", services.get("worker", {}).get("deploy", {}).get("replicas") == 2)
    R.check("compose: migrate is one-shot and gates api and worker",
            services["migrate"].get("command") == ["migrate"]
            and all(services[s]["depends_on"]["migrate"]["condition"] == "service_completed_successfully" for s in ("api", "worker")))
    R.check("compose: api publishes port 8000", any(str(p).endswith(":8000") for p in services["api"].get("ports", [])))
    R.check("compose: build context is the repository root", all(
        (ROOT / "deploy" / services[s]["build"]["context"]).resolve() == ROOT for s in ("migrate", "api", "worker")))
    root_compose = load_yaml(ROOT / "compose.yaml")
    R.check("compose.yaml at the root includes deploy/docker-compose.yml", root_compose.get("include") == ["deploy/docker-compose.yml"])
    kind = load_yaml(ROOT / "deploy/kind/kind-config.yaml")
    ports = {m["containerPort"]: m["hostPort"] for n in kind["nodes"] for m in n.get("extraPortMappings", [])}
    R.check("kind config maps ingress ports 80 and 443 to the host", ports == {80: 80, 443: 443}, str(ports))
    R.check("kind node labelled ingress-ready for ingress-nginx", any((n.get("labels") or {}).get("ingress-ready") == "true" for n in kind["nodes"]))
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needle, label in (
        ("FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder", "builder stage on rust:1.95-bookworm"),
        ("ARG RUST_VERSION=1.95", "Rust 1.95"),
        ("cargo build --release --locked -p jobsched", "release build of the jobsched package"),
        ("--mount=type=cache", "cargo cache mounts"),
        ("FROM debian:${DEBIAN_RELEASE}-slim", "debian slim runtime"),
        ("ca-certificates", "CA certificates"),
        ("USER 10001:10001", "non-root user 10001"),
        ('ENTRYPOINT ["jobsched"]', "ENTRYPOINT jobsched"),
        ('org.opencontainers.image.version="${VERSION}"', "VERSION build arg as OCI label"),
    ):
        R.check(f"Dockerfile: {label}", needle in dockerfile)
    ignore = (ROOT / ".dockerignore").read_text().split()
    R.check(".dockerignore excludes target/, .git and *.db", all(p in ignore for p in ("target/", ".git/", "*.db")))
    mk = (ROOT / "Makefile.packaging").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", mk, re.M))
    want = {"image", "kind-up", "kind-load", "helm-install", "e2e", "chart-check"}
    R.check("Makefile.packaging has image, kind-up, kind-load, helm-install, e2e, chart-check", want <= targets, str(sorted(want - targets)))
    syntax = subprocess.run(["bash", "-n", str(ROOT / "tests/e2e/run.sh")], capture_output=True, text=True)
    R.check("tests/e2e/run.sh parses (bash -n)", syntax.returncode == 0, syntax.stderr)


def section_env_contract(rendered: dict[str, list[dict]]) -> None:
    """With JOBSCHED_BIN: every JOBSCHED_* variable the chart sets is one the subcommand reads."""
    R.section("environment contract with the binary")
    binary = os.environ.get("JOBSCHED_BIN")
    if not binary:
        R.note("JOBSCHED_BIN not set: environment variables not compared with `jobsched <role> --help`")
        return
    # Read by the logging setup, and the tokens, which are read from the environment only (a
    # flag would show them in `ps`): none of them is a clap flag.
    read_directly = {"JOBSCHED_LOG_FORMAT", "JOBSCHED_API_TOKEN", "JOBSCHED_ADMIN_TOKEN"}
    known: dict[str, set[str]] = {}
    for name, docs in rendered.items():
        for w, c in containers(docs):
            args = c.get("args") or []
            jobsched_image = merged_values(SCENARIOS[name])["image"]["repository"]
            if not args or c.get("command") or not c["image"].startswith(jobsched_image + ":"):
                continue
            role = args[0]
            if role not in known:
                try:
                    out = subprocess.run([binary, role, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
                except (OSError, subprocess.SubprocessError) as e:
                    R.check(f"`jobsched {role} --help` runs", False, str(e))
                    known[role] = set()
                    continue
                known[role] = set(re.findall(r"env: (JOBSCHED_[A-Z_]+)", out)) | read_directly
            unknown = sorted(e["name"] for e in c.get("env", [])
                             if e["name"].startswith("JOBSCHED_") and e["name"] not in known[role])
            R.check(f"[{name}] {kn(w)}/{c['name']}: `jobsched {role}` reads every JOBSCHED_* variable set", not unknown, f"not read: {unknown}")


ORDER = ["CustomResourceDefinition", "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim", "Role", "RoleBinding",
         "Service", "Deployment", "StatefulSet", "Job", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress",
         "NetworkPolicy", "ServiceMonitor", "SchedulerConfig"]


def print_resources(docs: list[dict]) -> None:
    print("\n== rendered resources, default values (release \"demo\", namespace \"jobsched\")")
    crd = [d for d in yaml.safe_load_all((CHART / "crds/schedulerconfigs.yaml").read_text()) if d][0]
    print(f"  CustomResourceDefinition/{crd['metadata']['name']}  (crds/, installed first by Helm)")
    for d in sorted(docs, key=lambda d: (ORDER.index(d["kind"]) if d["kind"] in ORDER else 99, d["metadata"]["name"])):
        hook = (d["metadata"].get("annotations") or {}).get("helm.sh/hook")
        print(f"  {d['kind']}/{d['metadata']['name']}" + (f"  (hook: {hook})" if hook else ""))


def main() -> int:
    section_tools()
    crd = section_crd()
    section_schema()
    section_lint()
    section_template_failures()
    rendered = section_render(crd)
    R.section("behaviour per scenario")
    for name, fn in (("default", assert_default), ("all-on", assert_all_on), ("external", assert_external),
                     ("external-url", assert_external_url), ("kind", assert_kind)):
        if name in rendered:
            try:
                fn(rendered[name])
            except Exception as e:  # a crash in an assertion is a failure, not a traceback
                R.check(f"[{name}] assertions ran", False, f"{type(e).__name__}: {e}")
    section_hardening(rendered)
    R.section("day one to day thirty (issue 19)")
    section_day_one(crd, rendered)
    section_dashboard()
    section_docs()
    section_packaging()
    section_env_contract(rendered)
    if "default" in rendered:
        print_resources(rendered["default"])
    if R.failures:
        print("\nFailures:")
        for f in R.failures:
            print(f"  - {f}")
    print(f"\n{R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
