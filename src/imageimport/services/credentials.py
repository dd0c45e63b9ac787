"""Per-import source credentials from the Secret an ImageImport names.

Nothing secret is stored in the database. The import's options record only a *reference*,
`{"namespace", "name", "keys"}`, under `credentialsSecretRef`. Every process that opens the
import's source reads that Secret by name through the Kubernetes API (`imageimport.kube`) and
opens the source with a copy of its own Settings in which the Secret's values replace the
installation's: `CredentialedRuntime` does this in `source_for`, so the planner and the workers
need no other change. Imports without a reference use the installation's credentials
(environment) exactly as a plain `Runtime` does, without touching Kubernetes at all.

So whoever opens sources of imports with a Secret — the operator when it lists, the workers when
they download — needs `get` on Secrets in the ImageImports' namespaces.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr

from imageimport.db.models import Import
from imageimport.errors import ConfigError
from imageimport.kube.secrets import KubernetesSecretReader
from imageimport.runtime import Runtime
from imageimport.settings import Settings
from imageimport.sources.base import Source
from imageimport.sources.registry import open_source

OPTION = "credentialsSecretRef"

# spec.source.credentialsSecretRef.keys field -> (the Secret key by default, the Settings field).
CREDENTIAL_KEYS: dict[str, tuple[str, str]] = {
    "googleApiKey": ("GOOGLE_API_KEY", "google_api_key"),
    "dropboxAppKey": ("DROPBOX_APP_KEY", "dropbox_app_key"),
    "dropboxAppSecret": ("DROPBOX_APP_SECRET", "dropbox_app_secret"),
    "dropboxRefreshToken": ("DROPBOX_REFRESH_TOKEN", "dropbox_refresh_token"),
}

# How long a worker trusts a Secret it read before reading it again (rotation).
CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    keys: tuple[tuple[str, str], ...]  # (Settings field, Secret key), in CREDENTIAL_KEYS order

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], namespace: str) -> SecretRef | None:
        raw = (spec.get("source") or {}).get("credentialsSecretRef")
        if not raw:
            return None
        chosen = raw.get("keys") or {}
        keys = tuple(
            (field, str(chosen.get(spec_key) or default))
            for spec_key, (default, field) in CREDENTIAL_KEYS.items()
        )
        return cls(namespace, str(raw["name"]), keys)

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> SecretRef | None:
        raw = (options or {}).get(OPTION)
        if not raw:
            return None
        keys = tuple((str(field), str(key)) for field, key in raw["keys"])
        return cls(str(raw["namespace"]), str(raw["name"]), keys)

    def to_options(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "keys": [list(k) for k in self.keys],
        }

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def credentials_from_secret(ref: SecretRef, data: Mapping[str, str] | None) -> dict[str, str]:
    """Settings field -> value, from a Secret's base64 `data`; a ConfigError names what is
    wrong (missing Secret, none of the expected keys) in a sentence for `status.message`."""
    if data is None:
        raise ConfigError(
            f"The Secret {ref} named in spec.source.credentialsSecretRef does not exist."
        )
    found: dict[str, str] = {}
    for field, key in ref.keys:
        if key in data:
            try:
                found[field] = base64.b64decode(data[key], validate=True).decode().strip()
            except (binascii.Error, UnicodeDecodeError) as error:
                raise ConfigError(
                    f"The key {key} of the Secret {ref} is not valid text."
                ) from error
    if not found:
        expected = ", ".join(key for _, key in ref.keys)
        raise ConfigError(f"The Secret {ref} has none of the keys {expected}.")
    return found


def with_credentials(settings: Settings, credentials: Mapping[str, str]) -> Settings:
    """The settings with these credentials in place of the installation's."""
    return settings.model_copy(update={k: SecretStr(v) for k, v in credentials.items()})


class SecretReader(Protocol):
    def __call__(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The Secret's `data` (base64 values), None if it does not exist."""


class CredentialedRuntime(Runtime):
    """A Runtime whose sources use the credentials of the Secret an import names."""

    def __init__(
        self,
        settings: Settings,
        migrate: bool = True,
        reader: SecretReader | None = None,
    ) -> None:
        super().__init__(settings, migrate=migrate)
        # Without one, a Kubernetes reader is made on first need: imports without a Secret
        # never need Kubernetes.
        self._reader = reader
        self._credentials: dict[SecretRef, tuple[float, dict[str, str]]] = {}
        self._credentials_lock = threading.Lock()

    def remember(self, ref: SecretRef, credentials: Mapping[str, str]) -> None:
        """Credentials the caller has just read from the Secret (saves reading it again)."""
        with self._credentials_lock:
            self._credentials[ref] = (time.monotonic(), dict(credentials))

    def credentials_for(self, ref: SecretRef) -> dict[str, str]:
        with self._credentials_lock:
            cached = self._credentials.get(ref)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        credentials = credentials_from_secret(ref, self._read(ref))
        self.remember(ref, credentials)
        return credentials

    def _read(self, ref: SecretRef) -> Mapping[str, str] | None:
        if self._reader is None:
            self._reader = KubernetesSecretReader()
        return self._reader(ref.namespace, ref.name)

    def settings_for(self, record: Import) -> Settings:
        ref = SecretRef.from_options(record.options)
        if ref is None:
            return self.settings
        return with_credentials(self.settings, self.credentials_for(ref))

    def source_for(self, record: Import) -> Source:
        if SecretRef.from_options(record.options) is None:
            return super().source_for(record)
        with self._lock:
            source = self._sources.get(record.id)
        if source is not None:
            return source
        # Read outside the lock: a slow API server must not stall other imports' threads.
        opened = open_source(record.url, self.settings_for(record), self.slots)
        with self._lock:
            source = self._sources.setdefault(record.id, opened)
        if source is not opened:
            opened.close()
        return source
