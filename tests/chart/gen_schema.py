"""Writes charts/jobsched/values.schema.json. The schema is kept as Python for readability;
run `python tests/chart/gen_schema.py` after changing it (check_chart.py verifies the file is
current)."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = ROOT / "charts/jobsched/values.schema.json"


def obj(props, required=(), extra=False, desc=None):
    s = {"type": "object", "additionalProperties": extra, "properties": props}
    if required:
        s["required"] = list(required)
    if desc:
        s["description"] = desc
    return s


STR = {"type": "string"}
BOOL = {"type": "boolean"}
MAP = {"type": "object"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
LIST = {"type": "array"}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
POS_INT = {"type": "integer", "minimum": 1}
NONNEG_INT = {"type": "integer", "minimum": 0}
QUANTITY = {"type": ["string", "integer"], "pattern": "^[0-9.]+([eE][0-9]+|[numkMGTPE]i?)?$"}
RESOURCES = obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
        "claims": LIST,
    }
)
PULL_POLICY = {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}
ENV_LIST = {
    "type": "array",
    "items": {"type": "object", "required": ["name"], "properties": {"name": STR}},
}
# A positive byte count: integer bytes, or a quantity with a binary or decimal suffix.
BYTES = {
    "oneOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"},
    ]
}
INT_OR_PERCENT = {"type": ["integer", "string"], "pattern": "^[0-9]+%?$"}


def pod_placement(spread=False):
    p = {
        "podAnnotations": STRMAP,
        "podLabels": STRMAP,
        "extraEnv": ENV_LIST,
        "nodeSelector": STRMAP,
        "tolerations": LIST,
        "affinity": MAP,
    }
    if spread:
        p["topologySpreadConstraints"] = LIST
    return p


def pdb():
    return obj({"enabled": BOOL, "maxUnavailable": INT_OR_PERCENT})


# An image tag that names a release: `latest` (which moves) is refused.
TAG = {"type": ["string", "number"], "not": {"const": "latest"}}
# An OCI digest, e.g. sha256:<64 hex>.
DIGEST = {"type": "string", "pattern": "^(|[a-z0-9]+([+._-][a-z0-9]+)*:[a-fA-F0-9]{32,})$"}


def image(repo_default, digest=False, required_tag=False):
    props = {
        "repository": {"type": "string", "minLength": 1, "description": f"e.g. {repo_default}"},
        "tag": dict(TAG, minLength=1) if required_tag else TAG,
        "pullPolicy": PULL_POLICY,
    }
    if digest:
        props["digest"] = DIGEST
    return obj(props)


def backing_service(port_name):
    return obj(
        {
            "enabled": BOOL,
            "image": image(port_name, required_tag=True),
            "password": STR,
            "persistence": obj(
                {"enabled": BOOL, "storageClass": STR, "size": QUANTITY}
            ),
            "resources": RESOURCES,
            "nodeSelector": STRMAP,
            "tolerations": LIST,
            "affinity": MAP,
        }
    )


def external(scheme):
    return obj(
        {
            "existingSecret": STR,
            "existingSecretKey": {"type": "string", "minLength": 1},
            "url": {"type": "string", "pattern": f"^(|{scheme}://.+)$"},
        }
    )


SECCOMP = obj({"type": {"type": "string"}, "localhostProfile": STR})

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "jobsched chart values",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "global": MAP,
        "nameOverride": STR,
        "fullnameOverride": {"type": "string", "maxLength": 40},
        "commonLabels": STRMAP,
        "image": image("jobsched", digest=True),
        "imagePullSecrets": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": STR}},
        },
        "log": obj(
            {
                "format": {"type": "string", "enum": ["json", "text"]},
                "filter": STR,
            }
        ),
        "redisPrefix": {"type": "string", "minLength": 1},
        "auth": obj(
            {
                "enabled": BOOL,
                "existingSecret": STR,
                "apiTokenKey": {"type": "string", "minLength": 1},
                "adminTokenKey": {"type": "string", "minLength": 1},
                "apiToken": STR,
                "adminToken": STR,
            }
        ),
        "serviceAccount": obj({"create": BOOL, "name": STR, "annotations": STRMAP}),
        "podSecurityContext": {
            "type": "object",
            "properties": {"runAsNonRoot": {"const": True}, "seccompProfile": SECCOMP},
        },
        "securityContext": {
            "type": "object",
            "properties": {
                "allowPrivilegeEscalation": {"const": False},
                "privileged": {"const": False},
                "runAsNonRoot": {"const": True},
                "seccompProfile": SECCOMP,
            },
        },
        "persistence": obj(
            {
                "enabled": BOOL,
                "existingClaim": STR,
                "storageClass": STR,
                "accessModes": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "string",
                        "enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"],
                    },
                },
                "size": QUANTITY,
                "seedSamples": BOOL,
            }
        ),
        "api": obj(
            {
                "replicas": NONNEG_INT,
                "bodyLimit": {"type": ["integer", "null"], "minimum": 1024},
                "metricsPort": PORT,
                "service": obj(
                    {
                        "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                        "port": PORT,
                        "annotations": STRMAP,
                    }
                ),
                "ingress": obj(
                    {
                        "enabled": BOOL,
                        "allowUnauthenticated": BOOL,
                        "exposeDocs": BOOL,
                        "className": STR,
                        "annotations": STRMAP,
                        "host": STR,
                        "tls": obj({"enabled": BOOL, "secretName": STR}),
                        # Removed (the Ingress routes fixed REST paths); accepted here so that
                        # the render can fail with an explanation instead of a schema error.
                        "path": {"description": "removed; see the chart README"},
                        "pathType": {"description": "removed; see the chart README"},
                    }
                ),
                "resources": RESOURCES,
                "pdb": pdb(),
                **pod_placement(spread=True),
            }
        ),
        "worker": obj(
            {
                "replicas": NONNEG_INT,
                "concurrency": POS_INT,
                "queues": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"},
                },
                "http": obj(
                    {
                        "allow": {
                            "type": "array",
                            "items": {"type": "string", "pattern": "^[A-Za-z0-9*.:\\[\\]_-]{1,260}$"},
                        },
                        "secretName": {"type": "string", "pattern": "^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$"},
                    }
                ),
                "prefetch": NONNEG_INT,
                "shutdownGrace": NONNEG_INT,
                "leaseTtl": {"type": "number", "exclusiveMinimum": 0},
                "metricsPort": PORT,
                "decodeBudget": BYTES,
                "autoscaling": obj(
                    {
                        "enabled": BOOL,
                        "minReplicas": POS_INT,
                        "maxReplicas": POS_INT,
                        "targetCPUUtilizationPercentage": {"type": ["integer", "null"], "minimum": 1},
                        "targetMemoryUtilizationPercentage": {"type": ["integer", "null"], "minimum": 1},
                        "behavior": MAP,
                    }
                ),
                "keda": obj(
                    {
                        "enabled": BOOL,
                        "minReplicaCount": NONNEG_INT,
                        "maxReplicaCount": POS_INT,
                        "pollingInterval": POS_INT,
                        "cooldownPeriod": NONNEG_INT,
                        "targetBacklogSeconds": {"type": "number", "exclusiveMinimum": 0},
                        "activationBacklogSeconds": {"type": "number", "minimum": 0},
                        "trigger": {"type": "string", "enum": ["prometheus", "postgresql"]},
                        "prometheus": obj({"serverAddress": STR, "query": STR}),
                        "postgresql": obj({"operatorNamespace": STR}),
                    }
                ),
                "resources": RESOURCES,
                "pdb": pdb(),
                **pod_placement(spread=True),
            }
        ),
        "controller": obj(
            {
                "enabled": BOOL,
                "scheduleSelector": {"type": "string"},
                "replicas": NONNEG_INT,
                "leaderElection": {"enum": ["auto", True, False]},
                "metricsPort": PORT,
                "resources": RESOURCES,
                **pod_placement(),
            }
        ),
        "scheduler": obj(
            {
                "create": BOOL,
                "policy": {"type": "string", "enum": ["fcfs", "sjf", "priority", "round_robin"]},
                "quantumSeconds": {"type": "number", "exclusiveMinimum": 0},
                "paused": BOOL,
            }
        ),
        "migrations": obj(
            {
                "mode": {"type": "string", "enum": ["auto", "hook", "initContainer"]},
                "backoffLimit": NONNEG_INT,
                "activeDeadlineSeconds": POS_INT,
                "resources": RESOURCES,
            }
        ),
        "tests": obj({"resources": RESOURCES}),
        "postgresql": backing_service("postgres"),
        "redis": backing_service("redis"),
        "externalDatabase": external("postgres(ql)?"),
        "externalRedis": external("rediss?"),
        "metrics": obj(
            {
                "podAnnotations": BOOL,
                "serviceMonitor": obj(
                    {
                        "enabled": BOOL,
                        "namespace": STR,
                        "labels": STRMAP,
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                    }
                ),
                "dashboard": obj(
                    {
                        "enabled": BOOL,
                        "namespace": STR,
                        "labels": STRMAP,
                        "annotations": STRMAP,
                    }
                ),
            }
        ),
        "networkPolicy": obj(
            {
                "enabled": BOOL,
                "apiIngressFrom": LIST,
                "metricsIngressFrom": LIST,
            }
        ),
    },
}
# The in-chart Postgres additionally names its database and user.
SCHEMA["properties"]["postgresql"]["properties"]["database"] = {
    "type": "string",
    "pattern": "^[a-z_][a-z0-9_]*$",
}
SCHEMA["properties"]["postgresql"]["properties"]["username"] = {
    "type": "string",
    "pattern": "^[a-z_][a-z0-9_]*$",
}


def rendered() -> str:
    return json.dumps(SCHEMA, indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if TARGET.read_text() == rendered() else 1)
    TARGET.write_text(rendered())
    print(f"wrote {TARGET.relative_to(ROOT)}")
