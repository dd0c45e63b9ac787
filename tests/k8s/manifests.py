"""Loading manifests and validating them the way an API server would, without one.

- Built-in kinds: kubernetes-validate's bundled schemas, in strict mode (unknown fields are
  errors, as with `kubectl apply`'s default --validate=strict).
- Custom resources: the CRD's own openAPIV3Schema turned into a JSON schema, with the
  structural-schema rules an API server applies (unknown fields rejected, defaults applied).
- KEDA's ScaledObject: the fields the chart uses, as KEDA's CRD types them.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "imageimport"
CRD_FILE = ROOT / "crds" / "imageimports.yaml"
CHART_CRD_FILE = CHART / "crds" / "imageimports.yaml"
PEERING_CRD_FILE = CHART / "crds" / "kopfpeerings.yaml"
EXAMPLES = ROOT / "examples"

# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest whose
# schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_file(path: Path) -> list[dict[str, Any]]:
    return load_documents(path.read_text())


def object_id(obj: dict[str, Any]) -> str:
    namespace = obj.get("metadata", {}).get("namespace")
    where = f"{namespace}/" if namespace else ""
    return f"{obj['kind']} {where}{obj['metadata']['name']}"


# -- built-in kinds ------------------------------------------------------------------------------


def is_builtin(obj: dict[str, Any]) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return group == "" or group.endswith(".k8s.io") or "." not in group


def validate_builtin(obj: dict[str, Any]) -> None:
    """Raise kubernetes_validate's ValidationError (or SchemaNotFoundError) on a bad object."""
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


# -- custom resources ----------------------------------------------------------------------------


def crd_version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for served in crd["spec"]["versions"]:
        if served["name"] == version:
            return served["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A structural OpenAPI schema as a JSON schema that rejects unknown fields.

    The API server prunes unknown fields, and rejects them when asked for strict field
    validation (kubectl's default); `metadata` is the server's business, not the CRD's.
    """
    node = copy.deepcopy(node)
    if (
        node.get("type") == "object"
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        node["additionalProperties"] = False
    for key, child in list(node.get("properties", {}).items()):
        if key == "metadata" and child == {"type": "object"}:
            continue
        node["properties"][key] = to_json_schema(child)
    if isinstance(node.get("items"), dict):
        node["items"] = to_json_schema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = to_json_schema(node["additionalProperties"])
    return node


def apply_defaults(value: Any, node: dict[str, Any]) -> Any:
    """Defaulting as the API server does it: a missing field with a default gets it, then
    the defaulted value is defaulted in turn (so `options: default {}` fills its fields)."""
    if isinstance(value, dict) and node.get("type") == "object":
        result = dict(value)
        for key, child in node.get("properties", {}).items():
            if key not in result and "default" in child:
                result[key] = copy.deepcopy(child["default"])
            if key in result:
                result[key] = apply_defaults(result[key], child)
        return result
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(item, node["items"]) for item in value]
    return value


def custom_resource_validator(crd: dict[str, Any], version: str) -> jsonschema.Draft7Validator:
    schema = to_json_schema(crd_version_schema(crd, version))
    # Every object has these, whether or not the CRD's schema mentions them.
    schema.setdefault("properties", {})
    schema["properties"].setdefault("apiVersion", {"type": "string"})
    schema["properties"].setdefault("kind", {"type": "string"})
    schema["properties"].setdefault("metadata", {"type": "object"})
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate_custom_resource(obj: dict[str, Any], crd: dict[str, Any]) -> dict[str, Any]:
    """Validate against the CRD (group, kind and served version first); return it defaulted."""
    group, _, version = obj["apiVersion"].rpartition("/")
    if group != crd["spec"]["group"] or obj["kind"] != crd["spec"]["names"]["kind"]:
        raise ValueError(f"{object_id(obj)} is not a {crd['metadata']['name']} object")
    schema = crd_version_schema(crd, version)
    defaulted = apply_defaults(obj, schema)
    custom_resource_validator(crd, version).validate(defaulted)
    return defaulted


@cache
def imageimport_crd() -> dict[str, Any]:
    (crd,) = load_file(CRD_FILE)
    return crd


@cache
def peering_crd() -> dict[str, Any]:
    (crd,) = load_file(PEERING_CRD_FILE)
    return crd


# -- KEDA ----------------------------------------------------------------------------------------

_INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string", "minLength": 1},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": _INT32,
                "cooldownPeriod": _INT32,
                "idleReplicaCount": _INT32,
                "minReplicaCount": _INT32,
                "maxReplicaCount": _INT32,
                "advanced": {"type": "object"},
                "fallback": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            # Every trigger setting is a string in KEDA's CRD.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

# What KEDA's nats-jetstream scaler reads (keda.sh/docs/latest/scalers/nats-jetstream).
NATS_JETSTREAM_METADATA = {
    "required": {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"},
    "optional": {"activationLagThreshold", "useHttps"},
}


def validate_scaled_object(obj: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(SCALED_OBJECT_SCHEMA).validate(obj)
    spec = obj["spec"]
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        raise ValueError(f"{object_id(obj)}: minReplicaCount > maxReplicaCount")
    for trigger in spec["triggers"]:
        if trigger["type"] == "nats-jetstream":
            keys = set(trigger["metadata"])
            missing = NATS_JETSTREAM_METADATA["required"] - keys
            unknown = (
                keys - NATS_JETSTREAM_METADATA["required"] - NATS_JETSTREAM_METADATA["optional"]
            )
            if missing or unknown:
                raise ValueError(f"{object_id(obj)}: missing {missing}, unknown {unknown}")


# -- any object ----------------------------------------------------------------------------------


def validate_object(obj: dict[str, Any]) -> None:
    """Validate one object of any kind the project ships; unknown kinds are an error."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    if api_version.startswith("imageimport.dev/"):
        validate_custom_resource(obj, imageimport_crd())
    elif api_version.startswith("kopf.dev/"):
        validate_custom_resource(obj, peering_crd())
    elif (api_version, kind) == ("keda.sh/v1alpha1", "ScaledObject"):
        validate_scaled_object(obj)
    elif is_builtin(obj):
        validate_builtin(obj)
    else:
        raise ValueError(f"no schema known for {api_version} {kind}")
