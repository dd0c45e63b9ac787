"""Who may use the API the chart installs: without a token in the values, a random one is
generated into a Secret (the same one after `helm upgrade`) and only the API reads it; a given
token is used as given; anonymous changes only when asked for; and the API answers to its
Service's names (and the probes to the pod IP), not to any other host name."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageimport.api import create_app
from imageimport.settings import Settings, secret
from tests.k8s.conftest import UPGRADES, VARIANTS, Rendered
from tests.k8s.test_chart import INSTALLED, SETTINGS_ENV_NAMES, container

# Variants with no token in the values, no existingSecret and no anonymous changes.
GENERATING = ["default", "dev", "keda", "dev-keda", "skaffold-kind"]
POD_IP = "10.244.1.7"


def token_secret_name(variant: Rendered) -> str:
    return variant.name_of("api-token")


def generated_token(objects: list[dict[str, Any]], name: str) -> str:
    (found,) = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    assert set(found["data"]) == {"API_TOKEN"}
    return base64.b64decode(found["data"]["API_TOKEN"]).decode()


def secret_refs(variant: Rendered, component: str) -> list[str]:
    workload = variant.get("Deployment", variant.name_of(component))
    sources = container(workload, component).get("envFrom", [])
    return [source["secretRef"]["name"] for source in sources if "secretRef" in source]


def api_settings(variant: Rendered, monkeypatch: pytest.MonkeyPatch, **extra: str) -> Settings:
    """The settings of an API pod: the ConfigMap, the chart's Secret, then `extra`."""
    for key in SETTINGS_ENV_NAMES:
        monkeypatch.delenv(key, raising=False)
    for key, value in (variant.config_env() | extra).items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def read_command(variant: Rendered, secret_name: str) -> str:
    namespace = variant.result["namespace"]
    return (
        f"kubectl -n {namespace} get secret {secret_name} "
        "-o jsonpath='{.data.API_TOKEN}' | base64 -d"
    )


@pytest.mark.parametrize("name", GENERATING)
def test_without_a_token_one_is_generated_into_a_secret_the_api_reads(
    name: str, rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    variant = rendered[name]
    secret_name = token_secret_name(variant)
    token = generated_token(variant.objects, secret_name)
    assert re.fullmatch(r"[A-Za-z0-9]{48}", token), token
    created = [(c["kind"], c["name"]) for c in variant.result["created"] if not c["deleted"]]
    assert ("Secret", secret_name) in created, "Helm did not create the token's Secret"

    # The API reads it; the operator and the workers, which never need it, do not.
    assert secret_name in secret_refs(variant, "api")
    assert secret_name not in secret_refs(variant, "operator")
    assert secret_name not in secret_refs(variant, "worker")
    settings = api_settings(variant, monkeypatch, API_TOKEN=token)
    assert secret(settings.api_token) == token
    assert settings.allow_anonymous is False and not settings.anonymous_writes

    # NOTES say how to read it, and use it in the curl example.
    notes = variant.result["notes"]
    assert read_command(variant, secret_name) in notes
    assert "The chart generated the token" in notes
    assert '-H "Authorization: Bearer $TOKEN"' in notes


def test_each_install_generates_its_own_token(rendered: dict[str, Rendered]) -> None:
    tokens = [
        generated_token(rendered[n].objects, token_secret_name(rendered[n])) for n in GENERATING
    ]
    assert len(set(tokens)) == len(tokens)


def test_helm_upgrade_keeps_the_generated_token(rendered: dict[str, Rendered]) -> None:
    variant = rendered["default"]
    before = generated_token(variant.objects, token_secret_name(variant))
    after = generated_token(variant.upgraded, token_secret_name(variant))
    assert after == before
    # The upgrade did render the release again, with its new values.
    (api,) = [
        o
        for o in variant.upgraded
        if o["metadata"]["name"] == variant.name_of("api") and o["kind"] == "Deployment"
    ]
    assert api["spec"]["replicas"] == UPGRADES["default"]["api"]["replicaCount"]


def test_a_given_token_is_used_and_none_generated(
    rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    variant = rendered["token"]
    given = VARIANTS["token"]["api"]["token"]
    assert not variant.has("Secret", token_secret_name(variant))
    assert variant.fullname in secret_refs(variant, "api")
    settings = api_settings(variant, monkeypatch)  # config_env holds the chart's Secret
    assert secret(settings.api_token) == given and not settings.anonymous_writes
    notes = variant.result["notes"]
    assert "It is the api.token you gave" in notes
    assert read_command(variant, variant.fullname) in notes


def test_an_existing_secret_brings_the_token(rendered: dict[str, Rendered]) -> None:
    variant = rendered["options"]
    existing = VARIANTS["options"]["existingSecret"]
    assert not variant.has("Secret", token_secret_name(variant))
    assert secret_refs(variant, "api") == [existing]
    notes = variant.result["notes"]
    assert read_command(variant, existing) in notes
    assert "add it, or set api.allowAnonymous=true" in notes


@pytest.mark.parametrize("name", INSTALLED)
def test_anonymous_changes_only_when_asked_for(
    name: str, rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    variant = rendered[name]
    asked = VARIANTS.get(name, {}).get("api", {}).get("allowAnonymous", False)
    env = variant.config_env()
    assert env["ALLOW_ANONYMOUS"] == str(asked).lower()
    notes = variant.result["notes"]
    if asked:
        assert not variant.has("Secret", token_secret_name(variant))
        assert api_settings(variant, monkeypatch).anonymous_writes
        assert "WARNING: api.allowAnonymous=true" in notes
        assert "Authorization: Bearer" not in notes
    else:
        assert "WARNING: api.allowAnonymous" not in notes


@pytest.mark.parametrize("name", INSTALLED)
def test_the_api_answers_to_its_names_and_the_probes_to_the_pod_ip(
    name: str, rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    variant = rendered[name]
    namespace = variant.result["namespace"]
    service = variant.name_of("api")
    names = [
        "localhost",
        "127.0.0.1",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]
    values = VARIANTS.get(name, {}).get("api", {})
    if values.get("ingress", {}).get("enabled"):
        names.append(values["ingress"]["host"])
    names += [host.replace("*", "nas") for host in values.get("allowedHosts", [])]
    port = container(variant.get("Deployment", service), "api")["ports"][0]["containerPort"]

    client = TestClient(create_app(api_settings(variant, monkeypatch), local_workers=False))
    for host in names:
        response = client.get("/", headers={"Host": f"{host}:{port}"})
        assert response.status_code == 200, (host, response.text)
    refused = client.get("/", headers={"Host": f"{POD_IP}:{port}"})
    assert refused.status_code == 400
    assert refused.json()["type"].endswith("/untrusted-host")

    # kubelet's probes (and Prometheus) address the pod by IP.
    api = container(variant.get("Deployment", service), "api")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = api[probe]["httpGet"]["path"]
        response = client.get(path, headers={"Host": f"{POD_IP}:{port}"})
        assert "untrusted-host" not in response.text, (probe, path)
    assert client.get("/healthz", headers={"Host": f"{POD_IP}:{port}"}).status_code == 200
    assert client.get("/metrics", headers={"Host": f"{POD_IP}:{port}"}).status_code == 200

    notes = variant.result["notes"]
    assert "The API answers to these host names only" in notes
    assert f"{service}.{namespace}.svc.cluster.local" in notes
