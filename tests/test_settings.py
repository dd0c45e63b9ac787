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
