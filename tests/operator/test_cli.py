"""`imageimport operator` refuses settings and options it cannot work with, in a sentence."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from imageimport.cli import app

BASE_ENV = {
    "DATABASE_URL": "postgresql://imageimport@db.invalid/imageimport",
    "NATS_URL": "nats://nats.invalid:4222",
    "POD_NAMESPACE": "",
    "KUBECONFIG": "/nonexistent/kubeconfig",
}


def run(*args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["operator", *args], env={**BASE_ENV, **env})
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--namespace", "photos"],
            {"NATS_URL": ""},
            "The operator needs NATS_URL: it publishes each file for `imageimport worker` "
            "processes through NATS JetStream.",
        ),
        (
            ["--namespace", "photos"],
            {"DATABASE_URL": "sqlite:///data/imageimport.db"},
            "The operator needs DATABASE_URL to name a PostgreSQL database: the API, the workers "
            "and the operator run in different pods and must share it (SQLite cannot be shared).",
        ),
        (
            ["--namespace", "photos", "--all-namespaces"],
            {},
            "Give either --namespace or --all-namespaces, not both.",
        ),
        (
            ["--namespace", "photos", "--standalone", "--peering", "imageimport"],
            {},
            "--standalone turns peering off; it cannot go with --peering.",
        ),
        (
            [],
            {},
            "Which namespaces should the operator serve? Give --namespace NS (repeatable) or "
            "--all-namespaces",
        ),
    ],
)
def test_refusals_are_one_sentence(args: list[str], env: dict[str, str], message: str) -> None:
    code, output = run(*args, **env)
    assert code == 2
    assert output.startswith("Error: " + message), output
    assert "Traceback" not in output
