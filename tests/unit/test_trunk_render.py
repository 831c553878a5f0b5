"""Rendering the trunk: golden files, override dir, strict templates, the Meta ranges file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thoth_pbx.core.resources import data_dir
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.trunk import render as trunk
from thoth_pbx.features.trunk.conffile import parse
from thoth_pbx.features.trunk.render import RenderError, TrunkPhone

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _render_case(name: str, **kwargs):  # type: ignore[no-untyped-def]
    case = json.loads((GOLDEN / f"{name}.json").read_text())
    return trunk.render(trunk.parse_trunk(case["settings"]), [TrunkPhone(**p) for p in case["phones"]], **kwargs)


def test_reference_config_from_the_issue_is_reproduced_exactly() -> None:
    rendered = _render_case("trunk_reference")
    assert rendered.files[trunk.PJSIP_FILE] == (GOLDEN / "trunk_reference.pjsip_thoth.conf").read_text()


def test_our_defaults_for_a_sample_phone() -> None:
    rendered = _render_case("trunk_defaults")
    for name in trunk.FILES:
        assert rendered.files[name] == (GOLDEN / f"trunk_defaults.{name}").read_text(), name
    pjsip = parse(rendered.files[trunk.PJSIP_FILE])
    endpoint = pjsip.find("wa.meta.vc", "endpoint")
    assert endpoint is not None
    # Meta's documented pitfalls, as defaults
    for key, value in {
        "media_encryption": "sdes",
        "allow": "opus",
        "direct_media": "no",
        "rtp_symmetric": "yes",
        "rewrite_contact": "no",
        "timers": "no",
        "send_connected_line": "no",
        "auth": "wa-15551230000",
    }.items():
        assert endpoint.get(key) == value, key
    outbound = pjsip.find("wa-15551230000", "endpoint")
    assert outbound is not None
    assert (outbound.get("from_user"), outbound.get("from_domain"), outbound.get("outbound_auth")) == (
        "+15551230000",
        "pbx.example.com",
        "wa-15551230000",
    )
    auth = pjsip.find("wa-15551230000", "auth")
    assert auth is not None and (auth.get("username"), auth.get("password")) == ("15551230000", "meta-generated;secret")
    identify = pjsip.find("wa.meta.vc", "identify")
    shipped = trunk.read_ranges((data_dir("config") / "meta-ip-ranges.txt").read_text())
    assert identify is not None and tuple(identify.values("match")) == shipped and len(shipped) == 23


def test_masked_preview_hides_the_password() -> None:
    rendered = _render_case("trunk_defaults")
    masked = rendered.masked()[trunk.PJSIP_FILE]
    assert "meta-generated" not in masked and "password=***" in masked


def test_dialplan_sends_both_number_forms_to_stasis_with_fallback() -> None:
    rendered = trunk.render(
        trunk.parse_trunk({"fallback_dial": "PJSIP/100&Local/200@from-internal", "fallback_timeout": 45}), app="my-app"
    )
    context = parse(rendered.files[trunk.DIALPLAN_FILE]).find("from-meta")
    assert context is not None
    extens = [o.value.split(",", 1)[0] for o in context.options if o.key == "exten"]
    assert extens == ["_X.", "_+X."]
    lines = [o.value for o in context.options]
    stasis = "n,Stasis(my-app,${EXTEN},${THOTH_WACID},${THOTH_WA_USER_ID},${THOTH_WA_USER_NAME},${THOTH_WA_USER_CC})"
    assert lines.count(stasis) == 2
    # early media before Stasis: Meta drops calls without media from us within 20 s
    assert lines.count("n,Progress()") == 2
    assert lines.index("n,Progress()") < lines.index(stasis)
    # Meta's headers reach the app only through a check of their alphabet (never raw as arguments)
    for var, header in (
        ("THOTH_WACID", "X-WA-Meta-WACID"),
        ("THOTH_WA_USER_ID", "X-WA-Meta-User-Id"),
        ("THOTH_WA_USER_NAME", "X-WA-Meta-User-Name"),
        ("THOTH_WA_USER_CC", "X-WA-Meta-User-Country-Code"),
    ):
        read = lines.index(f"n,Set({var}=${{PJSIP_HEADER(read,{header})}})")
        assert lines[read + 1].startswith(f"n,Set({var}=${{IF($[${{LEN(${{{var}}})}} = ${{LEN(${{FILTER(")
        assert read + 1 < lines.index(stasis)
    assert not any("PJSIP_HEADER" in line for line in lines if line.startswith("n,Stasis("))
    assert lines.count('n,GotoIf($["${STASISSTATUS}" = "FAILED"]?fallback)') == 2
    assert lines.count("n(fallback),Dial(PJSIP/100&Local/200@from-internal,45)") == 2


def test_override_dir_wins_over_shipped_template(tmp_path: Path) -> None:
    shipped = (data_dir("asterisk_templates") / "aor.conf.j2").read_text()
    (tmp_path / "aor.conf.j2").write_text(shipped + "qualify_timeout=7\n")
    plain = trunk.render(trunk.parse_trunk({}))
    custom = trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert parse(custom.files[trunk.PJSIP_FILE]).find("wa.meta.vc", "aor").get("qualify_timeout") == "7"
    assert parse(plain.files[trunk.PJSIP_FILE]).find("wa.meta.vc", "aor").get("qualify_timeout") is None


def test_override_ranges_file_and_comments(tmp_path: Path) -> None:
    (tmp_path / "meta-ip-ranges.txt").write_text("# ours\n198.51.100.0/24  # lab\n\n203.0.113.7\n")
    rendered = trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert parse(rendered.files[trunk.PJSIP_FILE]).find("wa.meta.vc", "identify").values("match") == [
        "198.51.100.0/24",
        "203.0.113.7",
    ]
    (tmp_path / "meta-ip-ranges.txt").write_text("198.51.100.0/24\nnot-a-network\n")
    with pytest.raises(FieldError) as err:
        trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert err.value.field == "meta-ip-ranges.txt:2"


def test_undefined_variable_in_override_is_an_error_not_blank(tmp_path: Path) -> None:
    (tmp_path / "identify.conf.j2").write_text(
        "[{{ t.endpoint_name }}]\ntype=identify\nmatch={{ t.no_such_setting }}\n"
    )
    with pytest.raises(RenderError) as err:
        trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert err.value.field == "template" and "no_such_setting" in err.value.message


def test_broken_override_syntax_names_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "aor.conf.j2").write_text("[{{ t.endpoint_name }}]\ntype=aor\n{% if %}\n")
    with pytest.raises(RenderError) as err:
        trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert "aor.conf.j2 line 3" in err.value.message


def test_override_cannot_print_a_line_break_through_a_value(tmp_path: Path) -> None:
    (tmp_path / "aor.conf.j2").write_text("[{{ t.endpoint_name }}]\ntype=aor\ncontact={{ 'sip:x\\n[evil]' }}\n")
    with pytest.raises(RenderError) as err:
        trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert "line break" in err.value.message


def test_override_producing_invalid_config_is_refused_before_writing(tmp_path: Path) -> None:
    (tmp_path / "aor.conf.j2").write_text("[{{ t.endpoint_name }}\ntype=aor\n")
    with pytest.raises(RenderError) as err:
        trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert "closing ']'" in err.value.message


def test_ipv6_bind_is_bracketed() -> None:
    rendered = trunk.render(trunk.parse_trunk({"bind_address": "::", "bind_port": 5062}))
    assert parse(rendered.files[trunk.PJSIP_FILE]).sections[0].get("bind") == "[::]:5062"


def test_phone_without_password_gets_no_auth_and_a_warning() -> None:
    rendered = trunk.render(trunk.parse_trunk({}), [TrunkPhone("+15551230000", None, None, 7)])
    pjsip = parse(rendered.files[trunk.PJSIP_FILE])
    assert pjsip.find("wa-15551230000", "auth") is None
    assert pjsip.find("wa.meta.vc", "endpoint").get("auth") is None
    assert pjsip.find("wa-15551230000", "endpoint").get("outbound_auth") is None
    assert rendered.phone_ids == (7,)
    assert any("+15551230000 has no sip_user_password" in w for w in rendered.warnings)


def test_inbound_auth_can_be_switched_off() -> None:
    phones = [TrunkPhone("+15551230000", "a", "x.example.com"), TrunkPhone("+4930123456", "b", "x.example.com")]
    on = parse(trunk.render(trunk.parse_trunk({}), phones).files[trunk.PJSIP_FILE])
    off = parse(trunk.render(trunk.parse_trunk({"inbound_auth": False}), phones).files[trunk.PJSIP_FILE])
    assert on.find("wa.meta.vc", "endpoint").get("auth") == "wa-15551230000,wa-4930123456"
    assert off.find("wa.meta.vc", "endpoint").get("auth") is None
    assert off.find("wa-4930123456", "endpoint").get("outbound_auth") == "wa-4930123456"


def test_override_added_or_removed_later_is_picked_up(tmp_path: Path) -> None:
    """The template cache must not hide an override the admin drops in while the service runs."""
    settings = trunk.parse_trunk({})
    first = trunk.render(settings, override_dir=tmp_path)
    (tmp_path / "aor.conf.j2").write_text("[{{ t.endpoint_name }}]\ntype=aor\ncontact=sip:override.example\n")
    second = trunk.render(settings, override_dir=tmp_path)
    (tmp_path / "aor.conf.j2").unlink()
    third = trunk.render(settings, override_dir=tmp_path)
    contact = lambda r: parse(r.files[trunk.PJSIP_FILE]).find("wa.meta.vc", "aor").get("contact")  # noqa: E731
    assert (contact(first), contact(second), contact(third)) == (
        "sip:wa.meta.vc",
        "sip:override.example",
        "sip:wa.meta.vc",
    )


@pytest.mark.parametrize(
    "escape",
    [
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ t.__class__.__init__.__globals__ }}",
        "{% set x = [] %}{{ x.append(1) }}",
    ],
)
def test_override_template_cannot_reach_python_internals(tmp_path: Path, escape: str) -> None:
    """Admin templates render sandboxed: no way to run OS commands as the service user."""
    (tmp_path / "aor.conf.j2").write_text("[{{ t.endpoint_name }}]\ntype=aor\ncontact=sip:" + escape + "\n")
    with pytest.raises(RenderError) as err:
        trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert err.value.field == "template" and "aor.conf.j2" in err.value.message


def test_sandboxed_override_keeps_loops_filters_and_includes(tmp_path: Path) -> None:
    (tmp_path / "extra.j2").write_text("{% for m in identify_match %}; {{ m | lower }}\n{% endfor %}")
    shipped = (data_dir("asterisk_templates") / "aor.conf.j2").read_text()
    (tmp_path / "aor.conf.j2").write_text(
        shipped + "{% include 'extra.j2' %}{% if t.endpoint_name | length > 2 %}qualify_timeout=7\n{% endif %}"
    )
    custom = trunk.render(trunk.parse_trunk({}), override_dir=tmp_path)
    assert parse(custom.files[trunk.PJSIP_FILE]).find("wa.meta.vc", "aor").get("qualify_timeout") == "7"
