"""The Asterisk config parser/escaper and the live-vs-rendered comparison (pure parts)."""

from __future__ import annotations

import pytest

from thoth_pbx.features.trunk import verify
from thoth_pbx.features.trunk.conffile import ConfSyntaxError, escape_value, mask_secrets, parse


def test_comments_escapes_and_block_comments() -> None:
    text = (
        "; header\n"
        "[a](!)\n"
        "key = value ; trailing\n"
        "pw=se\\;cret\n"
        "obj => thing\n"
        "x=1 ;-- block\n"
        "[hidden]\n"
        "still=comment --; y=2\n"
        "list=a\n"
        "list+=b\n"
        "#tryinclude other.conf\n"
        "[b](a)\n"
        "type=aor\n"
    )
    conf = parse(text)
    a, b = conf.sections
    assert (a.name, a.template, b.inherits, b.type) == ("a", True, ("a",), "aor")
    assert [(o.key, o.value) for o in a.options] == [
        ("key", "value"),
        ("pw", "se;cret"),
        ("obj", "thing"),
        ("x", "1"),
        ("y", "2"),
        ("list", "ab"),
    ]
    assert a.options[2].object_style
    assert [(d.name, d.argument) for d in conf.directives] == [("tryinclude", "other.conf")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[a\nx=1\n", "closing ']'"),
        ("x=1\n", "outside of any [section]"),
        ("[a]\njust words\n", "no '='"),
        ("[a]\n#includ x\n", "unknown directive"),
        ("[a] trailing\n", "unexpected text"),
    ],
)
def test_syntax_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfSyntaxError) as err:
        parse(text)
    assert message in str(err.value) and err.value.line >= 1


@pytest.mark.parametrize("value", ["a;b", ">x", "=>y", "\\;", "a\\", ";--", "--;", "[x]", "#include y"])
def test_escaped_values_read_back_unchanged(value: str) -> None:
    assert parse(f"[s]\nk={escape_value(value)}\n").sections[0].get("k") == value


def test_escape_refuses_line_breaks() -> None:
    with pytest.raises(ValueError):
        escape_value("a\nb")


def test_mask_secrets() -> None:
    assert mask_secrets("username=1\npassword = x;y\n md5_cred=abc\n") == "username=1\npassword=***\n md5_cred=***\n"


def test_compare_finds_refused_unknown_and_missing_options() -> None:
    conf = parse(
        "[t]\ntype=transport\ntos=cs3\nlocal_net=10.8.0.0/24\n"
        "[e]\ntype=endpoint\ndisallow=all\nallow=opus\ndirect_media=no\ntimers=no\ndirect_medai=no\n"
        "[e]\ntype=identify\nendpoint=e\nmatch=69.171.251.0/255.255.255.0\nmatch=31.13.24.0/21\n"
        "[gone]\ntype=aor\ncontact=sip:x\n"
    )
    live = {
        ("transport", "t"): {"Tos": "96", "LocalNet": "10.8.0.0/255.255.255.0"},
        ("endpoint", "e"): {"Allow": "(opus|ulaw)", "DirectMedia": "true", "Timers": "no"},
        ("identify", "e"): {"Endpoint": "e", "Match": "69.171.251.0/24,31.13.24.0/255.255.248.0"},
    }
    found = {(m.object_type, m.object_name, m.option) for m in verify.compare_pjsip(conf, live)}
    assert found == {
        ("endpoint", "e", "allow"),
        ("endpoint", "e", "direct_media"),
        ("endpoint", "e", "direct_medai"),
        ("aor", "gone", None),
    }


def test_compare_masks_secrets_in_reports() -> None:
    conf = parse("[p]\ntype=auth\npassword=new\n")
    (mismatch,) = verify.compare_pjsip(conf, {("auth", "p"): {"Password": "old"}})
    assert (mismatch.expected, mismatch.actual) == ("***", "***")


def test_dialplan_intent_matches_dialplan_show_output() -> None:
    conf = parse("[from-meta]\nexten => _+X.,1,NoOp(x)\n same => n,Stasis(app)\n same => n(fallback),Hangup\n")
    shown = (
        "[ Context 'from-meta' created by 'pbx_config' ]\n"
        "  '_+X.' =>         1. NoOp(x)                         [extensions_thoth.conf:2]\n"
        "                    2. Stasis(app)                      [extensions_thoth.conf:3]\n"
        "     [fallback]     3. Hangup()                         [extensions_thoth.conf:4]\n"
        "\n-= 1 extension (3 priorities) in 1 context. =-\n"
    )
    intent = verify.dialplan_intent(conf)
    assert intent == {
        "from-meta": [
            ("_+X.", 1, None, "NoOp(x)"),
            ("_+X.", 2, None, "Stasis(app)"),
            ("_+X.", 3, "fallback", "Hangup()"),
        ]
    }
    assert verify.compare_dialplan(intent, {"from-meta": shown}) == []
    missing = verify.compare_dialplan(intent, {"from-meta": shown.replace("Stasis(app)", "Stasis(other)")})
    assert [(m.option, m.expected, m.actual) for m in missing] == [("_+X.,2", "Stasis(app)", "Stasis(other)")]
    assert [m.option for m in verify.compare_dialplan(intent, {"from-meta": ""})] == [None]
