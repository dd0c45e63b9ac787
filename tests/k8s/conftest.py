"""The chart rendered by real Helm, once per test session, for every values variant."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pytest
import yaml

from tests.k8s import chart_venv
from tests.k8s.manifests import CHART, ROOT, load_documents, object_id

RENDER_SCRIPT = ROOT / "tests" / "k8s" / "render_chart.py"
SKAFFOLD_FILE = ROOT / "skaffold.yaml"
KIND_CONFIG_FILE = ROOT / "kind-config.yaml"
NAMESPACE = "imageimport"
RELEASE = "demo"
# What the image placeholders of skaffold's setValueTemplates stand for in the tests.
SKAFFOLD_IMAGE = {"IMAGE_REPO_imageimport": "imageimport", "IMAGE_TAG_imageimport": "dev"}

# Values variants installed with Helm. "default", "dev" and KEDA on/off are what the issue asks
# for; "options" switches on every optional branch the others leave off.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "dev": {"dev": {"enabled": True}},
    "keda": {"keda": {"enabled": True}},
    "dev-keda": {"dev": {"enabled": True}, "keda": {"enabled": True}},
    "options": {
        "existingSecret": "imageimport-secrets",
        "database": {"url": ""},
        "s3": {"endpointUrl": "http://minio.storage:9000", "prefix": "imports/"},
        "api": {
            "token": "ignored-because-of-existingSecret",
            "corsOrigins": ["https://photos.example"],
            "service": {"type": "NodePort", "nodePort": 30080},
            "ingress": {"enabled": True, "className": "nginx", "host": "images.example"},
        },
        "operator": {
            "watchNamespaces": ["imageimport", "photos"],
            "peering": {"enabled": False},
        },
        "worker": {"autoscaling": {"enabled": False}, "replicaCount": 3},
        "config": {"mode": "standalone", "extraEnv": {"SOURCE_RETRY_ATTEMPTS": "8"}},
    },
    # Who may use the API: a token given in the values, or anonymous changes allowed.
    "token": {"api": {"token": "a-token-given-in-the-values"}},
    "anonymous": {
        "api": {"allowAnonymous": True, "allowedHosts": ["photos.example", "*.lan.example"]}
    },
}
# Variants that are also upgraded (`helm upgrade` with these values) right after the install.
UPGRADES: dict[str, dict[str, Any]] = {"default": {"api": {"replicaCount": 3}}}
# Helm must refuse this one: values.schema.json says the port is an integer.
INVALID_VARIANT = {"api": {"port": "eight thousand"}}


def set_path(values: dict[str, Any], dotted: str, value: Any) -> None:
    """`helm --set a.b.c=value`."""
    *parents, leaf = dotted.split(".")
    for key in parents:
        values = values.setdefault(key, {})
    values[leaf] = value


def json_patch(document: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The add/remove operations of RFC 6902 that skaffold profiles use here."""
    document = copy.deepcopy(document)
    for patch in patches:
        *parents, leaf = [
            part.replace("~1", "/").replace("~0", "~") for part in patch["path"][1:].split("/")
        ]
        target: Any = document
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if patch["op"] == "add":
            target[leaf] = patch["value"]
        elif patch["op"] == "remove":
            del target[leaf]
        else:
            raise ValueError(f"unsupported patch op {patch['op']}")
    return document


def skaffold_config(profile: str | None = None) -> dict[str, Any]:
    config = yaml.safe_load(SKAFFOLD_FILE.read_text())
    if profile is not None:
        (chosen,) = [p for p in config.get("profiles", []) if p["name"] == profile]
        config = json_patch(config, chosen["patches"])
    return config


def skaffold_variant(profile: str | None) -> dict[str, Any]:
    """What `skaffold run` (with the given profile) passes to `helm install`."""
    (release,) = skaffold_config(profile)["deploy"]["helm"]["releases"]
    values: dict[str, Any] = {}
    for key, value in release.get("setValues", {}).items():
        set_path(values, key, value)
    for key, template in release.get("setValueTemplates", {}).items():
        rendered = template
        for name, replacement in SKAFFOLD_IMAGE.items():
            rendered = rendered.replace("{{." + name + "}}", replacement)
        set_path(values, key, rendered)
    return {"values": values, "release": release["name"], "namespace": release["namespace"]}


@dataclass
class Rendered:
    """One variant as Helm installed it."""

    name: str
    result: dict[str, Any]

    @cached_property
    def objects(self) -> list[dict[str, Any]]:
        """The release's own objects (the manifest), hooks excluded."""
        return load_documents(self.result["manifest"])

    @cached_property
    def hooks(self) -> list[dict[str, Any]]:
        return [doc for hook in self.result["hooks"] for doc in load_documents(hook["manifest"])]

    @property
    def everything(self) -> list[dict[str, Any]]:
        return self.objects + self.hooks

    def of_kind(self, kind: str, hooks: bool = False) -> list[dict[str, Any]]:
        return [o for o in (self.everything if hooks else self.objects) if o["kind"] == kind]

    def get(self, kind: str, name: str, hooks: bool = False) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind, hooks) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str, hooks: bool = False) -> bool:
        return any(o["metadata"]["name"] == name for o in self.of_kind(kind, hooks))

    @property
    def fullname(self) -> str:
        """The chart's "imageimport.fullname" for this release."""
        release = self.result.get("release", RELEASE)
        return release if "imageimport" in release else f"{release}-imageimport"

    def name_of(self, component: str) -> str:
        return f"{self.fullname}-{component}"

    @cached_property
    def upgraded(self) -> list[dict[str, Any]]:
        """The release's objects as the upgrade in UPGRADES rendered them."""
        upgrade = self.result.get("upgrade")
        assert upgrade, f"{self.name} was not upgraded (see UPGRADES)"
        assert upgrade["error"] is None, f"helm upgrade of {self.name}: {upgrade['error']}"
        return load_documents(upgrade["manifest"])

    def config_env(self) -> dict[str, str]:
        """The settings every long-running pod gets: ConfigMap, then the chart's Secret."""
        (config_map,) = self.of_kind("ConfigMap")
        env = dict(config_map["data"])
        for secret in self.of_kind("Secret"):
            if secret["metadata"]["name"] == config_map["metadata"]["name"]:
                env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
        return env

    def describe(self, obj: dict[str, Any]) -> str:
        return f"{self.name}: {object_id(obj)}"


@pytest.fixture(scope="session")
def chart_python() -> str:
    python = chart_venv.find_python()
    if python is None:
        pytest.skip(
            "The chart tests run real Helm through helm-sdkpy, which needs Python >= 3.12; none "
            "was found (set IMAGEIMPORT_CHART_PYTHON to one)."
        )
    return python


@pytest.fixture(scope="session")
def helm_render(chart_python: str) -> dict[str, Any]:
    venv = chart_venv.ensure_venv(chart_python)
    variants: dict[str, dict[str, Any]] = {
        name: {"values": values, "release": RELEASE, "namespace": NAMESPACE}
        for name, values in VARIANTS.items()
    }
    for name, values in UPGRADES.items():
        variants[name]["upgrade"] = values
    variants["skaffold-kind"] = skaffold_variant("kind")
    variants["invalid"] = {"values": INVALID_VARIANT}
    result = subprocess.run(
        [str(venv.python), str(RENDER_SCRIPT), str(CHART), json.dumps(variants)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HELM_DRIVER": "memory"},
    )
    assert result.returncode == 0, f"render_chart.py failed:\n{result.stderr[-5000:]}"
    output = json.loads(result.stdout)
    output["venv"] = {"built": venv.built, "seconds": venv.seconds}
    for name, variant in variants.items():
        output["variants"][name]["release"] = variant.get("release", RELEASE)
        output["variants"][name]["namespace"] = variant.get("namespace", NAMESPACE)
    return output


@pytest.fixture(scope="session")
def rendered(helm_render: dict[str, Any]) -> dict[str, Rendered]:
    """Every installable variant; a variant Helm could not install fails its tests here."""
    variants = {}
    for name, result in helm_render["variants"].items():
        if name == "invalid":
            continue
        assert result.get("error") is None, (
            f"helm install of variant {name} failed: {result['error']}"
        )
        variants[name] = Rendered(name, result)
    return variants
