"""Hypothesis strategies and checks shared by the trunk property tests (unit and real Asterisk).

Each example sets ONE trunk field (or the sample phone's password/hostname) to a value
that is valid-looking text with config-breaking fragments spliced in (line breaks,
`[section]`, `#include`, `;` comments, `=>`, backslashes...). Rejected values are fine;
an accepted one must render into exactly the same sections and option names as a benign
value in the same field, and every option fed by the field must read back as the value.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from thoth_pbx.features.trunk import render as trunk
from thoth_pbx.features.trunk.conffile import ConfFile, parse
from thoth_pbx.features.trunk.render import TrunkPhone

NASTY = [
    "\n",
    "\r\n",
    "\n[evil]\n",
    "[evil]",
    "\n#include /etc/passwd\n",
    "#include x",
    "#exec x",
    ";",
    ";--",
    "--;",
    "\\",
    "\\;",
    "=",
    "=>",
    ">",
    "+=",
    " ",
    "\t",
    "\x00",
    "\x7f",
    "ü",
    "(!)",
    ",",
    ")",
    "$",
    "{",
    "}",
]


def _networks(version: int) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    return st.tuples(st.ip_addresses(v=version), st.integers(0, bits)).map(
        lambda t: str(ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False))
    )


BASE: dict[str, st.SearchStrategy[Any]] = {
    "transport_name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,20}", fullmatch=True),
    "endpoint_name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,20}", fullmatch=True),
    "external_media_address": st.one_of(
        st.ip_addresses().map(str), st.from_regex(r"[a-z]{1,8}(\.[a-z]{2,5}){1,2}", fullmatch=True)
    ),
    "external_signaling_address": st.from_regex(r"[a-z]{1,8}(\.[a-z]{2,5}){1,2}", fullmatch=True),
    "cert_file": st.from_regex(r"/[A-Za-z0-9._+@:~-]{1,12}(/[A-Za-z0-9._+@:~-]{1,12}){0,3}", fullmatch=True),
    "ca_list_file": st.from_regex(r"/[a-z]{1,12}/[a-z.]{1,12}", fullmatch=True),
    "contact": st.from_regex(
        r"sips?:([a-z0-9+]{1,8}@)?[a-z]{1,8}\.[a-z]{2,4}(:[1-9][0-9]{0,3})?(;[a-z]{1,8}(=[a-z0-9]{1,8})?){0,2}",
        fullmatch=True,
    ),
    "context": st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,20}", fullmatch=True),
    "language": st.from_regex(r"[a-z]{2,3}(_[A-Z]{2})?", fullmatch=True),
    "fallback_dial": st.from_regex(r"(PJSIP|Local)/[A-Za-z0-9_.@+*#-]{1,10}(&PJSIP/[0-9]{1,4})?", fullmatch=True),
    "tos": st.sampled_from(["cs3", "ef", "af41", "96"]),
    "local_net": st.lists(st.one_of(_networks(4), _networks(6)), min_size=1, max_size=3, unique=True),
    "identify_match": st.lists(_networks(4), min_size=1, max_size=3, unique=True),
    "codecs": st.lists(st.sampled_from(["opus", "ulaw", "alaw", "g722"]), min_size=1, max_size=3, unique=True),
    "phone.password": st.text(min_size=1, max_size=24),
    "phone.sip_hostname": st.from_regex(r"[a-z]{1,8}(\.[a-z]{2,5}){1,2}", fullmatch=True),
}

BENIGN: dict[str, Any] = {
    "transport_name": "benign-tls",
    "endpoint_name": "benign.example",
    "external_media_address": "192.0.2.1",
    "external_signaling_address": "benign.example.com",
    "cert_file": "/benign.crt",
    "ca_list_file": "/benign.ca",
    "contact": "sip:benign.example",
    "context": "benign",
    "language": "en",
    "fallback_dial": "PJSIP/1",
    "tos": "cs1",
    "phone.password": "benign",
    "phone.sip_hostname": "benign.example.com",
}


@st.composite
def spliced(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """A valid-looking value with nasty fragments inserted (or, sometimes, left clean)."""
    value = draw(base)
    if isinstance(value, list):
        if value and draw(st.booleans()):
            i = draw(st.integers(0, len(value) - 1))
            value = [*value[:i], draw(spliced(st.just(value[i]))), *value[i + 1 :]]
        return value
    text = str(value)
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(NASTY)) + text[pos:]
    return text


def field_and_value() -> st.SearchStrategy[tuple[str, Any]]:
    return st.sampled_from(sorted(BASE)).flatmap(lambda f: st.tuples(st.just(f), spliced(BASE[f])))


def render_with(field: str, value: Any) -> dict[str, str]:
    """Render with `field` set to `value` (raises FieldError when validation refuses it)."""
    settings: dict[str, Any] = {"cert_file": "/k.crt", "priv_key_file": "/k.key", "fallback_dial": "PJSIP/100"}
    phone = {"number": "+15551230000", "password": "p4ss", "sip_hostname": "pbx.example.com"}
    if field.startswith("phone."):
        phone[field.split(".", 1)[1]] = value
    else:
        settings[field] = value
    rendered = trunk.render(trunk.parse_trunk(settings), [TrunkPhone(**phone)], app="thoth-pbx")
    return rendered.files


def benign_for(field: str, value: Any) -> Any:
    if isinstance(value, list):
        if field == "codecs":
            return ["opus", "ulaw", "alaw", "g722"][: len(value)]
        return [f"10.{i}.0.0/16" for i in range(len(value))]
    return BENIGN[field]


def shape(conf: ConfFile) -> list[tuple[str | None, list[str]]]:
    return [(s.type, [o.key for o in s.options]) for s in conf.sections]


def accepted_value(field: str, value: Any) -> Any:
    """The value as validation keeps it (what must read back)."""
    if field.startswith("phone."):
        key = field.split(".", 1)[1]
        checked = trunk.check_phone(TrunkPhone(**{"number": "+15551230000", key: value}))
        return checked.password if key == "password" else checked.sip_hostname
    return getattr(trunk.parse_trunk({field: value}), field)


# field -> how to read the values it fed from the parsed files
ReadBack = Callable[[ConfFile, ConfFile], list[str]]


def _opt(type_: str, key: str, *, index: int = 0) -> ReadBack:
    def read(pjsip: ConfFile, _dialplan: ConfFile) -> list[str]:
        sections = [s for s in pjsip.sections if s.type == type_]
        return sections[index].values(key) if len(sections) > index else []

    return read


READ_BACK: dict[str, ReadBack] = {
    "transport_name": lambda p, d: [p.sections[0].name, *_opt("endpoint", "transport")(p, d)],
    "endpoint_name": lambda p, d: [p.sections[1].name, *_opt("endpoint", "aors")(p, d)],
    "external_media_address": _opt("transport", "external_media_address"),
    "external_signaling_address": _opt("transport", "external_signaling_address"),
    "cert_file": _opt("transport", "cert_file"),
    "ca_list_file": _opt("transport", "ca_list_file"),
    "contact": _opt("aor", "contact"),
    "context": lambda p, d: [*_opt("endpoint", "context")(p, d), d.sections[0].name],
    "language": _opt("endpoint", "language"),
    "fallback_dial": lambda p, d: [
        o.value.split("Dial(", 1)[1].rsplit(",", 1)[0] for o in d.sections[0].options if "Dial(" in o.value
    ][:1],
    "tos": _opt("transport", "tos"),
    "local_net": _opt("transport", "local_net"),
    "identify_match": _opt("identify", "match"),
    "codecs": _opt("endpoint", "allow"),
    "phone.password": _opt("auth", "password"),
    "phone.sip_hostname": _opt("endpoint", "from_domain", index=1),
}


def expected_read_back(field: str, kept: Any) -> list[str]:
    if isinstance(kept, tuple):
        return [str(v) for v in kept]
    if field in ("transport_name", "endpoint_name", "context"):
        return [str(kept), str(kept)]
    return [str(kept)]


def check_rendered(field: str, value: Any, files: dict[str, str]) -> tuple[ConfFile, ConfFile]:
    """Assert the property for one accepted value; returns the parsed files."""
    pjsip, dialplan = parse(files[trunk.PJSIP_FILE]), parse(files[trunk.DIALPLAN_FILE])
    baseline = render_with(field, benign_for(field, value))
    assert shape(pjsip) == shape(parse(baseline[trunk.PJSIP_FILE])), (
        f"{field}={value!r} changed the pjsip sections/options"
    )
    assert shape(dialplan) == shape(parse(baseline[trunk.DIALPLAN_FILE])), f"{field}={value!r} changed the dialplan"
    kept = accepted_value(field, value)
    assert READ_BACK[field](pjsip, dialplan) == expected_read_back(field, kept), f"{field}={value!r} did not read back"
    return pjsip, dialplan
