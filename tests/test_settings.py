import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from imageimport.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^# ([A-Z0-9_]+)=", text, flags=re.MULTILINE))
    expected = {
        str(field.validation_alias or name).upper() for name, field in Settings.model_fields.items()
    }
    assert expected - documented == set()
    assert documented - expected == set()


def test_endpoints_must_be_http_urls() -> None:
    with pytest.raises(ValidationError, match="must be an http"):
        Settings(_env_file=None, gdrive_api_url="ftp://example.com")  # type: ignore[call-arg]


def test_endpoint_trailing_slash_is_dropped() -> None:
    settings = Settings(_env_file=None, dropbox_api_url="http://127.0.0.1:9/")  # type: ignore[call-arg]
    assert settings.dropbox_api_url == "http://127.0.0.1:9"


def test_embedded_defaults_live_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=None)  # type: ignore[call-arg]
    assert settings.effective_database_url == f"sqlite:///{tmp_path.as_posix()}/imageimport.db"
    assert settings.effective_objects_dir == tmp_path / "objects"


def test_allowed_hosts_are_normalised_and_checked() -> None:
    hosts = ["Photos.Example.", "[::1]", "0:0:0:0:0:0:0:1", "*.Lan.Example", "*", "10.0.0.5"]
    settings = Settings(_env_file=None, allowed_hosts=hosts)  # type: ignore[call-arg]
    assert settings.allowed_hosts == [
        "photos.example",
        "::1",
        "::1",
        "*.lan.example",
        "*",
        "10.0.0.5",
    ]
    for bad in (
        "photos.example:8000",
        "http://photos.example",
        "a b",
        "*.10.0.0.5",
        "ev*l.example",
    ):
        with pytest.raises(ValidationError, match="entry 2 is not a host name") as raised:
            Settings(_env_file=None, allowed_hosts=["localhost", bad])  # type: ignore[call-arg]
        assert bad not in str(raised.value)  # settings errors never echo values
    with pytest.raises(ValidationError):
        Settings(_env_file=None, allowed_hosts=[])  # type: ignore[call-arg]


def test_allow_anonymous_is_unset_true_or_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    for value, expected in (("", None), ("true", True), ("false", False)):
        monkeypatch.setenv("ALLOW_ANONYMOUS", value)
        assert Settings(_env_file=None).allow_anonymous is expected  # type: ignore[call-arg]
    monkeypatch.setenv("ALLOW_ANONYMOUS", "true")
    assert Settings(_env_file=None).anonymous_writes  # type: ignore[call-arg]
    # A token always wins; an empty one (compose's unset variable) is no token.
    assert not Settings(_env_file=None, api_token="t").anonymous_writes  # type: ignore[call-arg]
    assert Settings(_env_file=None, api_token="").anonymous_writes  # type: ignore[call-arg]
