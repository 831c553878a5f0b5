from __future__ import annotations

from pathlib import Path

import pytest

from thoth_pbx.core.settings import SettingsError, load_settings, setting_keys


def test_defaults_without_any_file_or_env() -> None:
    s = load_settings(None, environ={})
    assert str(s.listen) == "127.0.0.1:8080"
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.database_url == "sqlite+thoth:///var/thoth-pbx.sqlite3"
    assert s.ami is None and s.ari is None
    assert s.ari_app == "thoth-pbx" and s.asterisk_mode == "plain"


def test_toml_then_env_override(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('listen = "0.0.0.0:9000"\nami_url = "tcp://thoth:s3cret@10.1.2.3:5039"\n[trunk]\nbind_port = 5061\n')
    s = load_settings(None, environ={"THOTH_CONFIG": str(cfg), "THOTH_LISTEN": "127.0.0.1:9100"})
    assert str(s.listen) == "127.0.0.1:9100"  # env wins over the file
    assert s.ami is not None and (s.ami.host, s.ami.port, s.ami.user, s.ami.secret) == (
        "10.1.2.3",
        5039,
        "thoth",
        "s3cret",
    )
    assert "s3cret" not in str(s.ami) and "s3cret" not in repr(s)
    assert s.trunk == {"bind_port": 5061}


@pytest.mark.parametrize(
    ("env", "key", "fragment"),
    [
        ({"THOTH_LISTEN": "nonsense"}, "listen", "host:port"),
        ({"THOTH_LISTEN": "127.0.0.1:99999"}, "listen", "65535"),
        ({"THOTH_AMI_URL": "http://a:b@h:1"}, "ami_url", "tcp://"),
        ({"THOTH_AMI_URL": "tcp://host:5038"}, "ami_url", "user and secret"),
        ({"THOTH_ARI_URL": "http://host:8088"}, "ari_url", "user and password"),
        ({"THOTH_ASTERISK_MODE": "weird"}, "asterisk_mode", "plain, freepbx"),
        ({"THOTH_DATABASE_URL": "mysql://x"}, "database_url", "unsupported"),
        ({"THOTH_META_API_VERSION": "25"}, "meta_api_version", "v25.0"),
        ({"THOTH_PUBLIC_URL": "ftp://x"}, "public_url", "http(s)"),
        ({"THOTH_ADMIN_PASSWORD": "short"}, "admin_password", "8 to 256"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], key: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(None, environ=env)
    assert err.value.key == key
    message = str(err.value)
    assert f"THOTH_{key.upper()}" in message and fragment in message
    assert "\n" not in message


def test_unknown_toml_key_and_missing_file(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('lisen = "127.0.0.1:1"\n')
    with pytest.raises(SettingsError, match="lisen"):
        load_settings(cfg, environ={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})
    cfg.write_text("listen = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(cfg, environ={})


def test_example_config_is_complete_and_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "thoth-pbx.example.toml"
    text = example.read_text()
    for key in setting_keys():
        assert f"{key} =" in text, f"{key} is not documented in the example config"
    load_settings(example, environ={})


def test_readme_documents_every_env_name() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for key in setting_keys():
        assert f"THOTH_{key.upper()}" in readme
