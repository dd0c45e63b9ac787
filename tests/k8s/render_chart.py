"""Render the chart with real Helm: lint it, install it into a Kubernetes emulator, print JSON.

Runs under Python >= 3.12 in the chart-test venv (helm-sdkpy, Helm 4 as a library, needs it),
as a subprocess of the tests, which run on the project's Python:

    HELM_DRIVER=memory python render_chart.py CHART_DIR VARIANTS_JSON > out.json

VARIANTS_JSON maps a variant name to {"values": ..., "release": ..., "namespace": ...}: what
`helm install -n NAMESPACE RELEASE CHART_DIR` is given (release and namespace optional), and
optionally "upgrade": the values of a `helm upgrade` of that release right after. For
each variant the chart is linted (a copy whose values.yaml holds the variant's values, since
Lint takes no values) and installed (no wait) into a fresh kmock KubernetesEmulator. The
output holds, per variant: the lint messages, the release's rendered manifest (what
`helm template` prints), the hooks with their manifests, the rendered NOTES.txt, the CRD
files, and every object the emulator received, so the tests can check that Helm really
created what it rendered.

HELM_DRIVER=memory must be in the environment before Python starts: the Go runtime inside
helm-sdkpy reads the environment once, when the library loads. It keeps the release in memory
instead of a protobuf-encoded Secret, which kmock cannot store.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import helm_sdkpy
import kmock
import yaml

DEFAULT_NAMESPACE = "imageimport"
DEFAULT_RELEASE = "demo"
ALL_VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete"})

# Kinds that come from operators installed separately in a real cluster (KEDA), which the
# chart uses but does not install.
EXTERNAL_RESOURCES = {
    "keda.sh/v1alpha1/scaledobjects": kmock.ResourceInfo(
        kind="ScaledObject", namespaced=True, verbs=ALL_VERBS
    ),
}


class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the few behaviours of a real API server that Helm relies on."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # Helm validates hook manifests client-side unless the server says it validates
        # fields itself (OpenAPI v3: a PATCH operation with a fieldValidation parameter), as
        # every API server since 1.27 does. kmock serves no OpenAPI at all.
        self.fallback["get /openapi/v3"] << self._openapi_root
        self.fallback["get", re.compile(r"/openapi/v3/.+")] << self._openapi_group_version

    async def _serve_version(self, request: Any) -> Any:
        # kmock 0.8 answers "/v1" for the core group; Helm then finds no ConfigMap in "v1".
        payload = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")
        return payload

    async def _serve_list(self, request: Any) -> Any:
        # client-go's informers (Helm's readiness watcher) refuse lists without a kind.
        payload = await super()._serve_list(request)
        resource = request.resource
        info = self._resources[resource] if resource in list(self._resources) else None
        kind = info.kind if info is not None and info.kind else resource.plural.capitalize()
        payload["apiVersion"] = self._group_version(resource)
        payload["kind"] = f"{kind}List"
        payload["metadata"]["resourceVersion"] = "1"
        return payload

    async def _handle(self, request: Any) -> Any:
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            plural = request.resource.plural if request.resource is not None else None
            if plural == "jobs":
                # Helm waits for hook Jobs to complete; there is no Job controller here to run
                # them, so they complete on creation. What they run is checked elsewhere.
                request.data["status"] = {
                    "succeeded": 1,
                    "conditions": [{"type": "Complete", "status": "True"}],
                }
            elif plural == "customresourcedefinitions":
                self._register_crd(request.data)
        return await super()._handle(request)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        """Serve a CRD's resource once it is created, as the API server does."""
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if version.get("served"):
                subresources = set((version.get("subresources") or {}).keys())
                self.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = (
                    kmock.ResourceInfo(
                        kind=names["kind"],
                        singular=names.get("singular"),
                        shortnames=set(names.get("shortNames", [])),
                        namespaced=spec["scope"] == "Namespaced",
                        verbs=ALL_VERBS,
                        subresources=subresources,
                    )
                )

    @staticmethod
    def _group_version(resource: Any) -> str:
        return resource.version if resource.group == "" else f"{resource.group}/{resource.version}"

    def _group_versions(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        for resource in self._get_resources():
            prefix = "api" if resource.group == "" else "apis"
            found.setdefault(f"{prefix}/{self._group_version(resource)}", []).append(resource)
        return found

    async def _openapi_root(self, request: Any) -> Any:
        return {
            "paths": {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash=0"}
                for path in self._group_versions()
            }
        }

    async def _openapi_group_version(self, request: Any) -> Any:
        path = request.url.path.removeprefix("/openapi/v3/")
        operations = {}
        for resource in self._group_versions().get(path, []):
            info = self._resources[resource] if resource in list(self._resources) else None
            if info is None or not info.kind:
                continue
            operations[f"/{path}/namespaces/{{namespace}}/{resource.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {
                        "group": resource.group,
                        "version": resource.version,
                        "kind": info.kind,
                    },
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.26.4"},
            "paths": operations,
        }


def kubeconfig(server_url: str, namespace: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": server_url}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "namespace": namespace, "user": "tests"},
                }
            ],
            "current-context": "emulator",
            "users": [{"name": "tests", "user": {}}],
        }
    )


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def lint_messages(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "severity": message.get("Severity"),
            "path": message.get("Path"),
            "error": message.get("Err"),
        }
        for message in result.get("Messages") or []
    ] + [{"severity": 3, "path": "", "error": error} for error in result.get("Errors") or []]


async def lint_variant(chart: Path, values: dict[str, Any], config: Any) -> dict[str, Any]:
    """Lint a copy of the chart whose values.yaml holds this variant's values."""
    with tempfile.TemporaryDirectory(prefix="imageimport-lint-") as tmp:
        copy_dir = Path(tmp) / chart.name
        shutil.copytree(chart, copy_dir)
        defaults = yaml.safe_load((chart / "values.yaml").read_text())
        (copy_dir / "values.yaml").write_text(yaml.safe_dump(merged(defaults, values)))
        try:
            result = await helm_sdkpy.Lint(config).run(str(copy_dir))
        except helm_sdkpy.HelmError as error:
            return {"ok": False, "error": str(error), "messages": []}
    messages = lint_messages(result)
    return {
        "ok": not any((m["severity"] or 0) >= 3 for m in messages),
        "error": None,
        "messages": messages,
    }


async def render_variant(chart: Path, variant: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    values = variant.get("values", {})
    namespace = variant.get("namespace", DEFAULT_NAMESPACE)
    async with ClusterEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.resources.load_bundled()
        for key, info in EXTERNAL_RESOURCES.items():
            emulator.resources[key] = info
        config = helm_sdkpy.Configuration(
            namespace=namespace, kubeconfig=kubeconfig(str(server.url).rstrip("/"), namespace)
        )
        lint = await lint_variant(chart, values, config)
        try:
            release = await helm_sdkpy.Install(config).run(
                variant.get("release", DEFAULT_RELEASE),
                str(chart),
                values=values,
                wait=False,
                timeout=60,
            )
        except helm_sdkpy.HelmError as error:
            return {"lint": lint, "error": str(error), "seconds": time.monotonic() - started}
        upgraded = None
        if "upgrade" in variant:
            upgraded = await upgrade_variant(chart, variant, config)
        created = [
            {
                "resource": f"{resource.group}/{resource.version}/{resource.plural}",
                "namespace": namespace,
                "name": name,
                "kind": stored.last.raw.get("kind"),
                # Hooks with the hook-succeeded delete policy are gone by now, as in a cluster.
                "deleted": stored.deleted,
            }
            for (resource, namespace, name), stored in emulator.objects.items()
        ]
    return {
        "lint": lint,
        "error": None,
        "status": release["info"]["status"],
        "notes": release["info"].get("notes", ""),
        "manifest": release["manifest"],
        "hooks": [
            {
                "name": hook["name"],
                "kind": hook["kind"],
                "events": hook.get("events", []),
                "weight": hook.get("weight", 0),
                "delete_policies": hook.get("delete_policies", []),
                "phase": (hook.get("last_run") or {}).get("phase"),
                "manifest": hook["manifest"],
            }
            for hook in release.get("hooks") or []
        ],
        "crd_files": sorted(
            file["name"] for file in release["chart"]["files"] if file["name"].startswith("crds/")
        ),
        "created": created,
        "upgrade": upgraded,
        "seconds": time.monotonic() - started,
    }


async def upgrade_variant(chart: Path, variant: dict[str, Any], config: Any) -> dict[str, Any]:
    """`helm upgrade` of the installed release with the variant's "upgrade" values: what
    the second rendering made of the objects the first one created (e.g. through lookup)."""
    try:
        release = await helm_sdkpy.Upgrade(config).run(
            variant.get("release", DEFAULT_RELEASE),
            str(chart),
            values=variant["upgrade"],
            wait=False,
            timeout=60,
            server_side_apply=False,
        )
    except helm_sdkpy.HelmError as error:
        return {"error": str(error)}
    return {
        "error": None,
        "status": release["info"]["status"],
        "notes": release["info"].get("notes", ""),
        "manifest": release["manifest"],
    }


async def main(chart: Path, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    output: dict[str, Any] = {"helm": helm_sdkpy.get_version(), "variants": {}}
    for name, variant in variants.items():
        try:
            output["variants"][name] = await render_variant(chart, variant)
        except Exception:
            output["variants"][name] = {"error": traceback.format_exc()}
    return output


if __name__ == "__main__":
    chart_dir = Path(sys.argv[1]).resolve()
    variant_values = json.loads(sys.argv[2])
    json.dump(asyncio.run(main(chart_dir, variant_values)), sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
