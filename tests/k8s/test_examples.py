"""examples/: ready-to-apply manifests, valid against Kubernetes and the ImageImport CRD, and
what the operator of a default install imports as they say."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from imageimport.operator.schedule import SyncSpec
from imageimport.services.options import check_spec
from imageimport.settings import Settings
from imageimport.sources.registry import parse_folder_url
from tests.k8s.manifests import CHART, EXAMPLES, load_file, object_id, validate_object

EXAMPLE_FILES = {
    "drive-public.yaml": ("gdrive", set()),
    "drive-with-api-key.yaml": ("gdrive", {"GOOGLE_API_KEY"}),
    "drive-synced.yaml": ("gdrive", set()),
    "dropbox-public.yaml": ("dropbox", set()),
    "dropbox-with-credentials.yaml": (
        "dropbox",
        {"DROPBOX_APP_KEY", "DROPBOX_APP_SECRET", "DROPBOX_REFRESH_TOKEN"},
    ),
}


def test_every_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} == set(EXAMPLE_FILES)


@pytest.mark.parametrize("filename", sorted(EXAMPLE_FILES))
def test_example_is_valid(filename: str) -> None:
    documents = load_file(EXAMPLES / filename)
    assert documents
    for obj in documents:
        assert "namespace" not in obj["metadata"], "examples go wherever `kubectl -n` says"
        validate_object(obj)


@pytest.mark.parametrize("filename", sorted(EXAMPLE_FILES))
def test_example_imports_the_right_kind_of_folder_with_its_credentials(filename: str) -> None:
    provider, credential_keys = EXAMPLE_FILES[filename]
    documents = load_file(EXAMPLES / filename)
    (resource,) = [d for d in documents if d["kind"] == "ImageImport"]
    assert parse_folder_url(resource["spec"]["source"]["url"]).provider == provider
    secrets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Secret"}
    reference = resource["spec"]["source"].get("credentialsSecretRef")
    if not credential_keys:
        assert reference is None and not secrets, object_id(resource)
        return
    # The referenced Secret ships beside it, with the keys the operator reads by default.
    secret = secrets[reference["name"]]
    assert set(secret["stringData"]) == credential_keys


@pytest.mark.parametrize("filename", sorted(EXAMPLE_FILES))
def test_the_operator_of_a_default_install_accepts_the_example(
    filename: str, make_settings: Callable[..., Settings]
) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    settings = make_settings(
        s3_bucket=values["s3"]["bucket"],
        s3_prefix=values["s3"]["prefix"],
        max_file_size_bytes=values["config"]["maxFileSizeBytes"],
    )
    (resource,) = [d for d in load_file(EXAMPLES / filename) if d["kind"] == "ImageImport"]
    check_spec(resource["spec"], settings)
    if "sync" in resource["spec"]:
        SyncSpec.from_spec(resource["spec"]["sync"])


def test_an_example_syncs_on_a_schedule() -> None:
    (resource,) = load_file(EXAMPLES / "drive-synced.yaml")
    sync = SyncSpec.from_spec(resource["spec"]["sync"])
    assert (sync.schedule, str(sync.time_zone), sync.prune) == ("0 3 * * *", "Europe/Berlin", True)
