"""The ImageImport CRD: valid for Kubernetes, and its schema accepts and refuses what it should."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from imageimport.services.options import SPEC_OPTIONS
from imageimport.sources.registry import parse_folder_url
from tests.k8s.manifests import (
    CHART_CRD_FILE,
    CRD_FILE,
    crd_version_schema,
    imageimport_crd,
    load_file,
    validate_builtin,
    validate_custom_resource,
)

DRIVE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
FOLDER, KEY, RLKEY = "abc123XYZ_-", "AAB-Cd_ef12", "q8wz1k2x3y4v5u6t7s8r9p0on"

FOLDER_LINKS = [
    f"https://drive.google.com/drive/folders/{DRIVE_ID}",
    f"https://drive.google.com/drive/folders/{DRIVE_ID}/",
    f"https://drive.google.com/drive/folders/{DRIVE_ID}?usp=sharing",
    f"https://drive.google.com/drive/folders/{DRIVE_ID}?usp=sharing&resourcekey=0-AbC_dEf",
    f"https://drive.google.com/drive/u/0/folders/{DRIVE_ID}",
    f"https://drive.google.com/drive/u/3/folders/{DRIVE_ID}?usp=drive_link",
    f"https://drive.google.com/drive/mobile/folders/{DRIVE_ID}",
    f"https://drive.google.com/open?id={DRIVE_ID}",
    f"https://drive.google.com/open?id={DRIVE_ID}&resourcekey=0-AbC_dEf",
    f"https://drive.google.com/folderview?id={DRIVE_ID}",
    f"http://drive.google.com/drive/folders/{DRIVE_ID}",
    f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}",
    f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&dl=0",
    f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?dl=0&rlkey={RLKEY}&st=ab12",
    f"https://dropbox.com/scl/fo/{FOLDER}/{KEY}/?rlkey={RLKEY}",
    f"https://dl.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey={RLKEY}&dl=1",
    f"https://www.dropbox.com/sh/{FOLDER}/{KEY}",
    f"https://www.dropbox.com/sh/{FOLDER}/{KEY}?dl=0",
]
NOT_FOLDER_LINKS = [
    "",
    "hello",
    DRIVE_ID,  # a bare id is fine on the command line, but a resource names a link
    f"https://drive.google.com/file/d/{DRIVE_ID}/view?usp=sharing",
    f"https://drive.google.com/uc?id={DRIVE_ID}&export=download",
    f"https://docs.google.com/document/d/{DRIVE_ID}/edit",
    "https://drive.google.com/drive/folders/abc",
    "https://drive.google.com/drive/my-drive",
    "https://drive.google.com/open",
    f"https://drive.google.com.evil.example/drive/folders/{DRIVE_ID}",
    f"ftp://drive.google.com/drive/folders/{DRIVE_ID}",
    f"https://drive.google.com/drive/folders/{DRIVE_ID} and more",
    f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?dl=0",
    f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}?rlkey=&dl=0",
    f"https://www.dropbox.com/scl/fo/{FOLDER}?rlkey={RLKEY}",
    f"https://www.dropbox.com/scl/fo/{FOLDER}/{KEY}/sub?rlkey={RLKEY}",
    f"https://www.dropbox.com/sh/{FOLDER}",
    "https://www.dropbox.com/s/abc123/photo.jpg?dl=0",
    "https://www.dropbox.com/scl/fi/abc123/photo.jpg?rlkey=xyz",
    "https://www.dropbox.com/home",
    "https://dropbox.com.evil.example/scl/fo/a/b?rlkey=c",
    "https://notdropbox.com/scl/fo/a/b?rlkey=c",
]


def import_with(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "imageimport.dev/v1alpha1",
        "kind": "ImageImport",
        "metadata": {"name": "test", "namespace": "default"},
        "spec": spec,
    }


def url_pattern() -> str:
    spec = crd_version_schema(imageimport_crd(), "v1alpha1")["properties"]["spec"]
    return spec["properties"]["source"]["properties"]["url"]["pattern"]


def test_the_chart_ships_the_same_crd() -> None:
    assert CHART_CRD_FILE.read_bytes() == CRD_FILE.read_bytes()


def test_the_crd_is_a_valid_kubernetes_object() -> None:
    validate_builtin(imageimport_crd())


@pytest.mark.parametrize("path", sorted(CHART_CRD_FILE.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_every_crd_the_chart_ships_is_valid(path: Path) -> None:
    (crd,) = load_file(path)
    assert crd["kind"] == "CustomResourceDefinition"
    validate_builtin(crd)


def test_names_versions_and_subresources() -> None:
    crd = imageimport_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "imageimports.imageimport.dev"
    assert (spec["group"], spec["scope"]) == ("imageimport.dev", "Namespaced")
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == (
        "ImageImport",
        "imageimports",
        "imageimport",
        ["imgimp"],
    )
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any]:
    node = schema
    for part in json_path.strip(".").split("."):
        node = node["properties"][part]
    return node


def test_kubectl_get_shows_phase_counters_last_sync_and_age() -> None:
    (version,) = imageimport_crd()["spec"]["versions"]
    columns = [c for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert [c["name"] for c in columns] == [
        "Phase",
        "Imported",
        "Failed",
        "Discovered",
        "Last Sync",
        "Age",
    ]
    schema = version["schema"]["openAPIV3Schema"]
    for column in columns:
        if column["name"] == "Age":
            assert column == {
                "name": "Age",
                "type": "date",
                "jsonPath": ".metadata.creationTimestamp",
            }
            continue
        # The column's path exists in the schema, with the column's type.
        node = _resolve(schema, column["jsonPath"])
        if column["type"] == "date":
            assert (node["type"], node["format"]) == ("string", "date-time")
        else:
            assert node["type"] == column["type"]


def test_source_and_options_are_immutable_through_cel_rules_and_sync_is_not() -> None:
    spec = crd_version_schema(imageimport_crd(), "v1alpha1")["properties"]["spec"]
    assert "x-kubernetes-validations" not in spec
    for field in ("source", "options"):
        rules = spec["properties"][field]["x-kubernetes-validations"]
        assert [r["rule"] for r in rules] == ["self == oldSelf"]
        assert f"spec.{field} is immutable" in rules[0]["message"]
    # suspend must be toggleable: no rule of spec.sync compares it with the old one.
    for rule in spec["properties"]["sync"]["x-kubernetes-validations"]:
        assert "oldSelf" not in rule["rule"]


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    return found


def test_the_schema_is_structural() -> None:
    """The API server's rules for CRD schemas that a plain JSON-schema check would miss."""
    schema = crd_version_schema(imageimport_crd(), "v1alpha1")
    for path, node in _walk(schema):
        assert "type" in node, f"{path or 'root'} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            jsonschema.Draft7Validator(node).validate(node["default"])
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), path
        if path.startswith(".spec") and node.get("type") == "string" and "enum" not in node:
            # The cost estimate of the CEL rule `self == oldSelf` needs bounded strings.
            assert "maxLength" in node, f"{path} is an unbounded string"
        if "pattern" in node:
            # Go's regexp (RE2) evaluates it: no look-arounds or back-references.
            assert not re.search(r"\(\?[=!<]|\\[1-9]", node["pattern"]), path


def test_conditions_have_the_standard_shape() -> None:
    status = crd_version_schema(imageimport_crd(), "v1alpha1")["properties"]["status"]
    conditions = status["properties"]["conditions"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert status["properties"]["phase"]["enum"] == [
        "Pending",
        "Listing",
        "Importing",
        "Succeeded",
        "CompletedWithFailures",
        "Failed",
        "Cancelled",
    ]
    counters = status["properties"]["counters"]["properties"]
    assert set(counters) == {
        "discovered",
        "imported",
        "duplicates",
        "unchanged",
        "gone",
        "skipped",
        "failed",
    }


@pytest.mark.parametrize("url", FOLDER_LINKS)
def test_folder_links_are_accepted(url: str) -> None:
    assert re.fullmatch(url_pattern(), url)
    validate_custom_resource(import_with({"source": {"url": url}}), imageimport_crd())
    parse_folder_url(url)  # and the operator's own parser agrees


@pytest.mark.parametrize("url", NOT_FOLDER_LINKS)
def test_other_links_are_refused(url: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(import_with({"source": {"url": url}}), imageimport_crd())


def test_an_import_gets_the_option_defaults() -> None:
    obj = import_with({"source": {"url": FOLDER_LINKS[0]}})
    defaulted = validate_custom_resource(obj, imageimport_crd())
    assert defaulted["spec"]["options"] == {"deleteImagesOnRemoval": False}
    assert "sync" not in defaulted["spec"]  # no sync rounds unless asked for


def test_a_sync_gets_its_defaults() -> None:
    obj = import_with({"source": {"url": FOLDER_LINKS[0]}, "sync": {"interval": "6h"}})
    defaulted = validate_custom_resource(obj, imageimport_crd())
    assert defaulted["spec"]["sync"] == {"interval": "6h", "suspend": False, "prune": False}


FULL_SPEC = {
    "source": {
        "url": FOLDER_LINKS[-3],
        "credentialsSecretRef": {"name": "dropbox-app", "keys": {"dropboxAppKey": "key"}},
    },
    "options": {"maxFileSizeBytes": 10_000_000_000, "deleteImagesOnRemoval": True},
    "sync": {"schedule": "0 3 * * *", "timeZone": "Europe/Berlin", "suspend": False, "prune": True},
}
FULL_STATUS = {
    "phase": "CompletedWithFailures",
    "importId": "0f8e4a4c-6e80-4a0b-9f44-8d6a4f1f2b11",
    "counters": {
        "discovered": 10,
        "imported": 7,
        "duplicates": 1,
        "unchanged": 0,
        "gone": 1,
        "skipped": 1,
        "failed": 1,
    },
    "bytes": 123456789,
    "startedAt": "2025-01-01T10:00:00Z",
    "completedAt": "2025-01-01T10:05:00Z",
    "observedGeneration": 1,
    "sync": {
        "lastSyncTime": "2025-01-01T10:00:00Z",
        "lastSyncRound": 2,
        "lastSyncResult": {"added": 1, "changed": 1, "unchanged": 7, "gone": 1, "pruned": 1},
        "nextSyncTime": "2025-01-02T02:00:00Z",
        "suspended": False,
    },
    "message": "7 images imported; 1 file failed.",
    "conditions": [
        {
            "type": "Complete",
            "status": "True",
            "reason": "ImportFinished",
            "message": "All files were processed.",
            "lastTransitionTime": "2025-01-01T10:05:00Z",
            "observedGeneration": 1,
        }
    ],
}


def test_the_spec_offers_what_the_operator_honours_and_nothing_else() -> None:
    spec = crd_version_schema(imageimport_crd(), "v1alpha1")["properties"]["spec"]
    assert set(spec["properties"]) == {"source", "options", "sync"}
    assert set(spec["properties"]["source"]["properties"]) == {"url", "credentialsSecretRef"}
    assert set(spec["properties"]["options"]["properties"]) == set(SPEC_OPTIONS)
    sync = spec["properties"]["sync"]["properties"]
    assert set(sync) == {"interval", "schedule", "timeZone", "suspend", "prune"}


def test_a_full_resource_with_status_is_accepted() -> None:
    obj = import_with(copy.deepcopy(FULL_SPEC))
    obj["status"] = copy.deepcopy(FULL_STATUS)
    validate_custom_resource(obj, imageimport_crd())


def _set(obj: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, leaf = dotted.split(".")
    node = obj
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return obj


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.source.url", _DELETE),
        ("spec.source", _DELETE),
        ("spec", _DELETE),
        ("spec.sourceUrl", "https://drive.google.com/drive/folders/x"),  # unknown field
        ("spec.source.token", "secret"),
        ("spec.options.deleteImagesOnRemova", True),
        ("spec.options.maxFileSizeBytes", 0),
        ("spec.options.maxFileSizeBytes", "10MB"),
        ("spec.options.deleteImagesOnRemoval", "yes"),
        # What earlier versions of the CRD had, and no import ever honoured.
        ("spec.destination", {"bucket": "photos.example"}),
        ("spec.options.recursive", False),
        ("spec.options.includeNonImages", True),
        ("spec.options.concurrency", 4),
        ("spec.source.credentialsSecretRef.name", "Not A Name"),
        ("spec.source.credentialsSecretRef", {"keys": {}}),
        ("spec.sync.interval", "6 hours"),
        ("spec.sync.interval", 3600),
        ("spec.sync.schedule", "@every 1h"),
        ("spec.sync.schedule", "0 3 * *"),
        ("spec.sync.suspend", "yes"),
        ("spec.sync.concurrencyPolicy", "Allow"),
        ("status.sync.lastSyncResult.added", -1),
        ("status.sync.lastSyncRound", 0),
        ("status.sync.nextRun", "2025-01-02T02:00:00Z"),
        ("status.phase", "Running"),
        ("status.counters.imported", -1),
        ("status.conditions", [{"type": "Complete", "status": "Maybe"}]),
        ("status.extra", 1),
    ],
)
def test_invalid_resources_are_refused(path: str, value: Any) -> None:
    obj = import_with(copy.deepcopy(FULL_SPEC))
    obj["status"] = copy.deepcopy(FULL_STATUS)
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(_set(obj, path, value), imageimport_crd())
