"""Several Asterisk servers in the settings (issue 16): the top-level keys are the first server,
each `[[asterisk]]` table one more, every mistake named by its table and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from thoth_pbx.core.settings import SettingsError, load_settings

FIRST = 'ami_url = "tcp://thoth:s1@10.0.0.11:5038"\nari_url = "http://thoth:s1@10.0.0.11:8088"\n'
SECOND = """
[[asterisk]]
name = "pbx-b"
ami_url = "tcp://thoth:s2@10.0.0.12:5038"
ari_url = "http://thoth:s2@10.0.0.12:8088"
config_dir = "/srv/pbx-b/asterisk"
mode = "freepbx"
trunk = { bind_address = "10.0.0.12" }
"""


def settings_of(tmp_path: Path, text: str, **env: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "thoth.toml"
    config.write_text(text)
    return load_settings(config, environ=env)


def test_the_first_server_is_the_top_level_keys_and_tables_add_more(tmp_path: Path) -> None:
    s = settings_of(tmp_path, FIRST + 'asterisk_name = "pbx-a"\n' + SECOND)
    first, second = s.asterisks
    assert (first.name, first.ari and first.ari.base_url, str(first.config_dir), first.mode) == (
        "pbx-a",
        "http://10.0.0.11:8088",
        "/etc/asterisk",
        "plain",
    )
    assert (second.name, second.ari and second.ari.base_url, str(second.config_dir), second.mode) == (
        "pbx-b",
        "http://10.0.0.12:8088",
        "/srv/pbx-b/asterisk",
        "freepbx",
    )
    assert second.trunk == {"bind_address": "10.0.0.12"}
    assert s.asterisk(None) == first and s.asterisk("pbx-b") == second and s.asterisk("nope") is None
    assert "s2" not in repr(s)


def test_one_server_by_default(tmp_path: Path) -> None:
    s = settings_of(tmp_path, FIRST)
    assert [server.name for server in s.asterisks] == ["main"]
    assert load_settings(None, environ={"THOTH_ASTERISK_NAME": "pbx-x"}).asterisks[0].name == "pbx-x"


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (FIRST + SECOND.replace('name = "pbx-b"', 'name = "main"'), "asterisk[0].name", "names another Asterisk"),
        (FIRST + SECOND.replace('name = "pbx-b"', 'name = "PBX B"'), "asterisk[0].name", "lowercase"),
        (FIRST + SECOND + SECOND.replace("pbx-b", "pbx-c"), "asterisk[1].ari_url", "another entry's Asterisk"),
        (FIRST + SECOND.replace("10.0.0.12:8088", "10.0.0.11:8088"), "asterisk[0].ari_url", "another entry"),
        (FIRST + SECOND.replace("10.0.0.12:5038", "10.0.0.11:5038"), "asterisk[0].ami_url", "another entry"),
        (FIRST + SECOND.replace('config_dir = "/srv/pbx-b/asterisk"\n', ""), "asterisk[0].config_dir", "required"),
        (FIRST + SECOND.replace('mode = "freepbx"', 'mode = "fancy"'), "asterisk[0].mode", "plain, freepbx"),
        (FIRST + SECOND.replace('mode = "freepbx"', 'colour = "red"'), "asterisk[0].colour", "unknown key"),
        (FIRST + SECOND.replace("trunk = {", "trunk = 1 #"), "asterisk[0].trunk", "must be a table"),
        (FIRST + SECOND.replace("http://thoth:s2@", "http://"), "asterisk[0].ari_url", "user and password"),
        (SECOND, "ari_url", "first server"),
        (FIRST + 'asterisk = "pbx-b"\n', "asterisk", "[[asterisk]] tables"),
    ],
)
def test_each_mistake_names_its_table_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings_of(tmp_path, text)
    assert caught.value.key == key, str(caught.value)
    assert fragment in str(caught.value)
    assert "s2" not in str(caught.value)
