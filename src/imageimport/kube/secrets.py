"""Reading a Secret's data through the Kubernetes API (for per-import source credentials)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageimport.errors import ConfigError, TransientError
from imageimport.kube.cluster import api_client as default_client


class KubernetesSecretReader:
    """Reads Secrets with the `kubernetes` client (in-cluster, or the kubeconfig)."""

    def __init__(self, api_client: Any | None = None) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(api_client or default_client())

    def __call__(self, namespace: str, name: str) -> Mapping[str, str] | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            if error.status in (401, 403):
                raise ConfigError(
                    f"This service account may not read the Secret {namespace}/{name} "
                    "(it needs `get` on secrets in that namespace)."
                ) from error
            raise TransientError(
                f"Reading the Secret {namespace}/{name} failed: {error.reason}"
            ) from error
        except HTTPError as error:
            raise TransientError(
                f"Reading the Secret {namespace}/{name} failed: {error}"
            ) from error
        # Base64 text; the client's types also allow bytes.
        return {
            key: value if isinstance(value, str) else value.decode("ascii")
            for key, value in (secret.data or {}).items()
        }
