"""Property, checked by the real Asterisk: no accepted trunk value adds a section or option.

The same strategies as tests/unit/test_trunk_properties.py, but every accepted render is
also read by Asterisk's own config parser (AMI `GetConfig`), which must see exactly the
sections and `key=value` lines our parser sees (so the unit test's oracle is faithful).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.harness import asterisk as ah
from tests.harness.asterisk import AsteriskInstance
from tests.support import trunk_fuzz
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.trunk import render as trunk
from thoth_pbx.features.trunk.conffile import ConfFile

Parsed = list[tuple[str, list[tuple[str, str]]]]


@pytest.fixture(scope="session")
def getconfig(asterisk: AsteriskInstance) -> Iterator[Callable[[str, str], Parsed]]:
    """Write a file into Asterisk's config dir and return how Asterisk parses it."""
    client = ah.sandbox.AmiClient(asterisk.host, asterisk.ami_port)
    client.login(asterisk.ami_user, asterisk.ami_secret)
    config_dir = asterisk.config_dir
    assert config_dir is not None

    def get(name: str, text: str) -> Parsed:
        (config_dir / name).write_text(text)
        reply = client.action("GetConfig", Filename=name)
        assert reply.get("Response") == "Success", reply
        sections: dict[int, tuple[str, list[tuple[int, str, str]]]] = {}
        for key, value in reply.items():
            if m := re.fullmatch(r"Category-(\d+)", key):
                sections.setdefault(int(m.group(1)), (value, []))
        for key, value in reply.items():
            if m := re.fullmatch(r"Line-(\d+)-(\d+)", key):
                k, _, v = value.partition("=")
                sections[int(m.group(1))][1].append((int(m.group(2)), k, v))
        return [(name_, [(k, v) for _, k, v in sorted(lines)]) for _, (name_, lines) in sorted(sections.items())]

    yield get
    client.close()


def ours(conf: ConfFile) -> Parsed:
    return [(s.name, [(o.key, o.value) for o in s.options]) for s in conf.sections]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trunk_fuzz.field_and_value())
def test_asterisk_reads_accepted_values_exactly_as_rendered(
    getconfig: Callable[[str, str], Parsed], example: tuple[str, Any]
) -> None:
    field, value = example
    try:
        files = trunk_fuzz.render_with(field, value)
    except FieldError:
        return
    pjsip, dialplan = trunk_fuzz.check_rendered(field, value, files)
    assert getconfig("thoth-prop-pjsip.conf", files[trunk.PJSIP_FILE]) == ours(pjsip), (field, value)
    assert getconfig("thoth-prop-extensions.conf", files[trunk.DIALPLAN_FILE]) == ours(dialplan), (field, value)


@pytest.mark.parametrize("password", ["se;cr#et[x]", ">gt", "back\\;slash", "a;--b--;c", "x=>y", "#include z"])
def test_asterisk_reads_tricky_passwords_unchanged(getconfig: Callable[[str, str], Parsed], password: str) -> None:
    files = trunk_fuzz.render_with("phone.password", password)
    parsed = getconfig("thoth-prop-pjsip.conf", files[trunk.PJSIP_FILE])
    auths = [dict(lines) for _, lines in parsed if ("type", "auth") in lines]
    assert [a["password"] for a in auths] == [password]
