"""The API's Kubernetes mode (IMAGEIMPORT_MODE=kubernetes): `POST /api/v1/imports` creates an
ImageImport resource in the API's own namespace, so the operator lists the folder and
`kubectl get imgimp` shows the import like any other applied with kubectl.

The import is recorded in the database at once under the new resource's uid — the key the
operator records it under — so the answer is the usual 202 with the import (`pending`) and its
Location, whether the operator is quick, slow or down for a while. Whichever of the two records
the uid first, there is one import; the operator then lists it. Every read stays as it is: from
the database.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from starlette.datastructures import State

from imageimport.api.problems import Problem
from imageimport.errors import ConfigError, TransientError
from imageimport.kube.cluster import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    api_client,
    current_namespace,
)
from imageimport.runtime import Runtime
from imageimport.services.imports import record_import
from imageimport.services.options import SPEC_OPTIONS, SpecError, check_spec


class ResourceStarter:
    """The API's starter in Kubernetes mode (see `imageimport.api.deps.Starter`)."""

    def __init__(self, runtime: Runtime, client: Any, namespace: str) -> None:
        from kubernetes.client import CustomObjectsApi

        self.runtime = runtime
        self.namespace = namespace
        self._objects = CustomObjectsApi(client)

    def __call__(self, url: str, options: dict[str, Any]) -> str:
        spec = self.spec(url, options)
        created = self._create(spec)
        meta = created["metadata"]
        return record_import(
            self.runtime, meta["uid"], spec, namespace=self.namespace, name=meta["name"]
        )

    def spec(self, url: str, options: dict[str, Any]) -> dict[str, Any]:
        """The resource's spec; InvalidSourceURL or SpecError (422) before anything is
        created."""
        unknown = sorted(set(options) - set(SPEC_OPTIONS))
        if unknown:
            raise SpecError(
                f"Unknown option(s) {', '.join(unknown)}: in Kubernetes mode the options are an "
                f"ImageImport's spec.options ({', '.join(SPEC_OPTIONS)})."
            )
        spec: dict[str, Any] = {"source": {"url": url}}
        if options:
            spec["options"] = dict(options)
        check_spec(spec, self.runtime.settings)
        return spec

    def _create(self, spec: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            # Our own unique name rather than generateName: the same on every API server.
            "metadata": {"name": f"import-{uuid.uuid4().hex[:12]}"},
            "spec": spec,
        }
        try:
            created = self._objects.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
        except ApiException as error:
            raise _kubernetes_error(error, self.namespace) from None
        except (HTTPError, OSError) as error:
            raise TransientError(f"The Kubernetes API cannot be reached: {error}") from None
        # The client declares `object`; the API server answers with the created resource.
        return cast(dict[str, Any], created)


def _kubernetes_error(error: Any, namespace: str) -> Exception:
    status = int(error.status or 0)
    if status in (401, 403):
        return ConfigError(
            f"The API's service account may not create ImageImports in the namespace "
            f"{namespace} (RBAC)."
        )
    if status == 404:
        return ConfigError(
            "The ImageImport resource is not installed in this cluster (the CRD "
            "imageimports.imageimport.dev is missing)."
        )
    if status == 422:
        return Problem(422, "invalid-import", f"Kubernetes refused the ImageImport: {error.body}")
    return TransientError(f"The Kubernetes API answered {status} {error.reason}.")


def resource_starter(state: State) -> ResourceStarter:
    """The app's one ResourceStarter, made on first use (a wrong cluster configuration then
    answers 503 with a sentence, instead of keeping the API from starting)."""
    starter: ResourceStarter | None = getattr(state, "resource_starter", None)
    if starter is None:
        namespace = current_namespace()
        if namespace is None:
            raise ConfigError(
                "IMAGEIMPORT_MODE=kubernetes needs the API's namespace: set POD_NAMESPACE "
                "(the chart sets it from the downward API)."
            )
        starter = ResourceStarter(state.runtime, api_client(), namespace)
        state.resource_starter = starter
    return starter
