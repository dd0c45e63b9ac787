"""values.schema.json accepts the chart's values and their variants, and refuses mistakes."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest
import yaml

from tests.k8s.conftest import INVALID_VARIANT, VARIANTS, skaffold_variant
from tests.k8s.manifests import CHART


def schema() -> dict[str, Any]:
    document = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(document)
    return document


def defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def test_the_default_values_are_valid() -> None:
    jsonschema.Draft7Validator(schema()).validate(defaults())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_variants_are_valid(name: str) -> None:
    jsonschema.Draft7Validator(schema()).validate(merged(defaults(), VARIANTS[name]))


@pytest.mark.parametrize("profile", [None, "kind"])
def test_what_skaffold_sets_is_valid(profile: str | None) -> None:
    values = skaffold_variant(profile)["values"]
    jsonschema.Draft7Validator(schema()).validate(merged(defaults(), values))


@pytest.mark.parametrize(
    "override",
    [
        INVALID_VARIANT,
        {"workers": {"replicaCount": 2}},  # a typo of "worker"
        {"worker": {"concurrency": 0}},
        {"worker": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
        {"keda": {"lagThreshold": 0}},
        {"keda": {"enabled": "yes"}},
        {"keda": {"natsServerMonitoringEndpoint": "http://nats:8222"}},
        {"config": {"mode": "cluster"}},
        {"config": {"extraEnv": {"lower_case": "x"}}},
        {"database": {"url": "mysql://db/imageimport"}},
        {"nats": {"url": "localhost:4222"}},
        {"s3": {"bucket": "Not_A_Bucket"}},
        {"api": {"service": {"type": "NodePort", "nodePort": 8000}}},
        {"api": {"corsOrigins": "https://photos.example"}},
        {"api": {"allowAnonymous": "yes"}},
        {"api": {"allowedHosts": ["https://photos.example"]}},
        {"api": {"allowedHosts": ["photos.example:8000"]}},
        {"api": {"allowedHosts": "photos.example"}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"operator": {"watchNamespaces": ["Not A Namespace"]}},
        {"dev": {"minio": {"rootPassword": "short"}}},
        {"dev": {"postgresql": {"password": "has@sign"}}},
        {"api": {"resources": {"limits": {"memory": "lots"}}}},
    ],
)
def test_mistakes_are_refused(override: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema()).validate(merged(defaults(), override))
