"""The few Kubernetes facts the operator and the API share: the ImageImport resource's
coordinates, a client for the cluster this process runs in, and this pod's namespace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from imageimport.errors import ConfigError

GROUP = "imageimport.dev"
VERSION = "v1alpha1"
PLURAL = "imageimports"
KIND = "ImageImport"
API_VERSION = f"{GROUP}/{VERSION}"

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def api_client() -> Any:
    """A `kubernetes` ApiClient: the pod's service account inside a cluster, the kubeconfig
    (KUBECONFIG or ~/.kube/config) outside one — the same order Kopf logs in with."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            # KUBECONFIG as it is now (the client reads it once, when first imported).
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None,
                client_configuration=configuration,
            )
        except (config.ConfigException, OSError) as error:
            raise ConfigError(
                "Cannot reach Kubernetes: this process runs neither inside a cluster (no service "
                f"account) nor with a usable kubeconfig ({error})."
            ) from error
    return client.ApiClient(configuration)


def current_namespace() -> str | None:
    """POD_NAMESPACE (set from the downward API), else the service account's namespace."""
    namespace = os.environ.get("POD_NAMESPACE", "").strip()
    if namespace:
        return namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None
