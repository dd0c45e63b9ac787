"""Dockerfile, .dockerignore, skaffold.yaml and kind-config.yaml agree with each other.

kind and skaffold cannot run here (no Kubernetes node image can be fetched): these tests check
what those tools would read. The image itself is built and run by tests/container (podman).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.conftest import KIND_CONFIG_FILE, Rendered, skaffold_config
from tests.k8s.manifests import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def kind_config() -> dict[str, Any]:
    return yaml.safe_load(KIND_CONFIG_FILE.read_text())


# -- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_the_image_is_multi_stage_slim_and_non_root() -> None:
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    builder, final = stages()
    assert builder[0][1].endswith(" AS builder")
    base = final[0][1].replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
    assert base == "python:3.11-slim"
    final_dict: dict[str, list[str]] = {}
    for instruction, arguments in final:
        final_dict.setdefault(instruction, []).append(arguments)
    # Only the venv comes over from the builder: no compilers, sources or wheels.
    assert final_dict["COPY"] == ["--from=builder /opt/imageimport /opt/imageimport"]
    assert final_dict["USER"] == ["10001:10001"]
    assert re.search(r"--uid 10001\b", " ".join(final_dict["RUN"]))
    assert json.loads(final_dict["ENTRYPOINT"][-1]) == ["imageimport"]
    port = values()["api"]["port"]
    assert json.loads(final_dict["CMD"][-1]) == ["api", "--host", "0.0.0.0", "--port", str(port)]
    assert set(final_dict["EXPOSE"][0].split()) == {
        str(port),
        str(values()["worker"]["healthPort"]),
    }
    # Runtime dependencies only: the dev extra (test servers, linters) stays out.
    assert not any("[dev]" in a for i, a in instructions if i == "RUN")


def test_the_chart_runs_the_image_as_its_user() -> None:
    chart = values()
    assert chart["image"]["repository"] == "imageimport"
    for context in (chart["podSecurityContext"], chart["securityContext"]):
        assert (context["runAsUser"], context["runAsGroup"]) == (10001, 10001)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match per path element, plus **) as a regex."""
    parts = []
    for element in pattern.strip("/").split("/"):
        if element == "**":
            parts.append(".*")
        else:
            parts.append(re.escape(element).replace(r"\*", "[^/]*").replace(r"\?", "[^/]"))
    return re.compile("/".join(parts).replace(".*/", "(?:.*/)?"))


def build_context_files() -> list[Path]:
    """The files `docker build .` sends, by .dockerignore's rules (the last match wins)."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            exclude = not line.startswith("!")
            rules.append((exclude, _pattern_regex(line.lstrip("!"))))
    sent = []
    for path in sorted(ROOT.rglob("*")):
        if not path.is_file() or ".git" in path.relative_to(ROOT).parts:
            continue
        relative = path.relative_to(ROOT).as_posix()
        prefixes = ["/".join(relative.split("/")[: i + 1]) for i in range(relative.count("/") + 1)]
        excluded = False
        for exclude, regex in rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                excluded = exclude
        if not excluded:
            sent.append(path)
    return sent


def test_the_build_context_holds_the_package_and_nothing_else() -> None:
    sent = {p.relative_to(ROOT).as_posix() for p in build_context_files()}
    assert {"pyproject.toml", "README.md", "src/imageimport/cli.py"} <= sent
    assert all(p in ("pyproject.toml", "README.md") or p.startswith("src/") for p in sent), sent
    assert not any("__pycache__" in p for p in sent)


# -- kind and skaffold ---------------------------------------------------------------------------


def test_kind_publishes_the_api_node_port_on_localhost_8000() -> None:
    config = kind_config()
    assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = config["nodes"]
    (mapping,) = node["extraPortMappings"]
    assert mapping["hostPort"] == 8000
    assert 30000 <= mapping["containerPort"] <= 32767  # the NodePort range


def test_skaffold_builds_the_chart_image_and_deploys_dev_mode() -> None:
    config = skaffold_config()
    assert config["apiVersion"].startswith("skaffold/v4")
    (artifact,) = config["build"]["artifacts"]
    assert artifact["image"] == values()["image"]["repository"]
    assert (ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]) == DOCKERFILE
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    assert release["setValues"]["dev.enabled"] is True
    templates = release["setValueTemplates"]
    assert templates["image.repository"] == "{{.IMAGE_REPO_" + artifact["image"] + "}}"
    assert templates["image.tag"] == "{{.IMAGE_TAG_" + artifact["image"] + "}}"
    (forward,) = config["portForward"]
    assert forward["namespace"] == release["namespace"]
    assert (forward["port"], forward["localPort"]) == (values()["api"]["service"]["port"], 8000)


def test_skaffold_uses_the_node_port_on_the_kind_cluster() -> None:
    (profile,) = skaffold_config()["profiles"]
    assert profile["activation"] == [{"kubeContext": f"kind-{kind_config()['name']}"}]
    config = skaffold_config("kind")
    (release,) = config["deploy"]["helm"]["releases"]
    (mapping,) = kind_config()["nodes"][0]["extraPortMappings"]
    assert release["setValues"]["api.service.type"] == "NodePort"
    assert release["setValues"]["api.service.nodePort"] == mapping["containerPort"]
    # kind's mapping already serves localhost:8000; a port-forward there would collide.
    assert "portForward" not in config


def test_skaffold_deploys_the_api_service_it_forwards(rendered: dict[str, Rendered]) -> None:
    """The release skaffold installs (kind profile) has the Service skaffold forwards."""
    variant = rendered["skaffold-kind"]
    (forward,) = skaffold_config()["portForward"]
    service = variant.get("Service", forward["resourceName"])
    assert service["spec"]["ports"][0]["port"] == forward["port"]
    (mapping,) = kind_config()["nodes"][0]["extraPortMappings"]
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["nodePort"] == mapping["containerPort"]
    assert variant.result["namespace"] == forward["namespace"]
    deployment = variant.get("Deployment", variant.name_of("api"))
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "imageimport:dev"  # skaffold's built image, as its templates set it
