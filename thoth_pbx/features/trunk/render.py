"""The WhatsApp SIP trunk: settings model, validation and rendering (pure).

Settings come in layers (built-in defaults <- TOML `[trunk]` <- admin edits stored in the
database); every value is validated before anything is rendered, and the validators only
accept text that Asterisk reads back unchanged, so no setting can add a line, a
`[section]`, an `#include` or a `;` comment to the generated files (the property tests
check this with conffile.parse and with the real Asterisk).

Rendering uses Jinja2 with StrictUndefined and a ChoiceLoader: a file with the same name
in the admin's override dir wins over the shipped template in asterisk_templates/ or
dialplan/. Every `{{ value }}` goes through `_finalize`, which prints booleans as yes/no,
escapes `;` and refuses line breaks, so even an override template cannot inject through a
value.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from thoth_pbx.core import validation as v
from thoth_pbx.core.resources import data_dir
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.trunk.conffile import ConfSyntaxError, escape_value, mask_secrets, parse

PJSIP_FILE = "pjsip_thoth.conf"
DIALPLAN_FILE = "extensions_thoth.conf"
FILES = (PJSIP_FILE, DIALPLAN_FILE)
RANGES_FILE = "meta-ip-ranges.txt"
PHONE_PREFIX = "wa-"

Validator = Callable[[str, Any], Any]

# ------------------------------------------------------------------ validators


_SECTION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]{0,79}")
_CONTEXT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,79}")
_PATH = re.compile(r"/[A-Za-z0-9._/+@:~-]{0,4095}")
_CODEC = re.compile(r"[a-z][a-z0-9_]{0,31}")
_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Za-z]{2,4})?")
_DIAL_ONE = r"[A-Za-z][A-Za-z0-9_]{0,31}/[A-Za-z0-9_.@+*#:-]{1,120}"
_DIAL = re.compile(rf"{_DIAL_ONE}(&{_DIAL_ONE}){{0,15}}")
_SIP_USER = r"[A-Za-z0-9+._~!*'-]{1,64}"
_SIP_PARAM = r";[A-Za-z0-9_-]{1,32}(=[A-Za-z0-9._-]{1,64})?"
_SIP_URI = re.compile(
    rf"sips?:(?:(?P<user>{_SIP_USER})@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{{1,5}}))?(?:{_SIP_PARAM}){{0,8}}"
)
_DSCP = (
    "cs0",
    "cs1",
    "cs2",
    "cs3",
    "cs4",
    "cs5",
    "cs6",
    "cs7",
    "af11",
    "af12",
    "af13",
    "af21",
    "af22",
    "af23",
    "af31",
    "af32",
    "af33",
    "af41",
    "af42",
    "af43",
    "ef",
)
_RESERVED_CONTEXTS = ("general", "globals")


def _string(name: str, value: Any, max_len: int = 200) -> str:
    return v.text(name, value, max_len=max_len)


def section_name(name: str, value: Any) -> str:
    text = _string(name, value, 80)
    if not _SECTION.fullmatch(text):
        raise FieldError(name, f"{text!r} is not a valid section name (letters, digits and ._+@-, at most 80)")
    return text


def context_name(name: str, value: Any) -> str:
    text = _string(name, value, 80)
    if not _CONTEXT.fullmatch(text) or text.lower() in _RESERVED_CONTEXTS:
        raise FieldError(name, f"{text!r} is not a usable dialplan context name (letters, digits and _.+-)")
    return text


def file_path(name: str, value: Any) -> str:
    text = _string(name, value, 4096)
    if not _PATH.fullmatch(text):
        raise FieldError(name, f"{text!r} must be an absolute path of letters, digits and ._/+@:~- (no spaces)")
    if any(part == ".." for part in text.split("/")):
        raise FieldError(name, "must not contain '..'")
    return text


def host_or_ip(name: str, value: Any) -> str:
    if isinstance(value, str) and _looks_like_ip(value.strip()):
        return v.ip_address(name, value)
    return v.hostname(name, value)


def _looks_like_ip(text: str) -> bool:
    return ":" in text or bool(re.fullmatch(r"[0-9.]+", text))


def network(name: str, value: Any) -> str:
    """An IP address or network: `10.0.0.0/8`, `10.0.0.0/255.0.0.0`, `2a03:2880::/32`.

    Kept as written (Asterisk accepts all these forms), so a reference config round-trips.
    """
    text = _string(name, value, 64)
    if not re.fullmatch(r"[0-9A-Fa-f.:/]+", text) or text.count("/") > 1:
        raise FieldError(name, f"{text!r} is not an IP address or network (CIDR or address/netmask)")
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise FieldError(name, f"{text!r} is not an IP address or network: {exc}") from None
    return text


def sip_uri(name: str, value: Any) -> str:
    text = _string(name, value, 255)
    match = _SIP_URI.fullmatch(text)
    if not match:
        raise FieldError(name, f"{text!r} is not a SIP URI like sip:wa.meta.vc or sip:wa.meta.vc:5061;transport=tls")
    host = match.group("host")
    if host.startswith("["):
        v.ip_address(name, host[1:-1])
    else:
        host_or_ip(name, host)
    if match.group("port"):
        v.port(name, int(match.group("port")))
    return text


def dial_target(name: str, value: Any) -> str:
    text = _string(name, value, 500)
    if not _DIAL.fullmatch(text):
        raise FieldError(
            name, f"{text!r} is not a Dial() target like PJSIP/100 or Local/100@from-internal (join several with &)"
        )
    return text


def tos(name: str, value: Any) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return v.integer(name, value, minimum=0, maximum=255)
    text = _string(name, value, 8).lower()
    if v.ascii_digits(text):
        return v.integer(name, text, minimum=0, maximum=255)
    if text not in _DSCP:
        raise FieldError(name, f"must be a DSCP name ({', '.join(_DSCP)}) or a number 0..255")
    return text


def _regex(pattern: re.Pattern[str], hint: str, max_len: int = 80) -> Validator:
    def check(name: str, value: Any) -> str:
        text = _string(name, value, max_len)
        if not pattern.fullmatch(text):
            raise FieldError(name, f"{text!r} {hint}")
        return text

    return check


def _codec(name: str, value: Any) -> str:
    text = _string(name, value, 32).lower()
    if not _CODEC.fullmatch(text):
        raise FieldError(name, f"{text!r} is not a codec name like opus or ulaw")
    return text


def _choice(*choices: str) -> Validator:
    def check(name: str, value: Any) -> str:
        return v.choice(name, value.strip().lower() if isinstance(value, str) else value, choices)

    return check


def _int(minimum: int, maximum: int) -> Validator:
    return lambda name, value: v.integer(name, value, minimum=minimum, maximum=maximum)


def _omit(validator: Validator) -> Validator:
    """None (or "") means: do not write the option, leave Asterisk's default."""

    def check(name: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return validator(name, value)

    check.omittable = True  # type: ignore[attr-defined]
    return check


def _list(item: Validator, *, max_items: int = 200, min_items: int = 0) -> Validator:
    def check(name: str, value: Any) -> tuple[Any, ...]:
        if isinstance(value, str):
            value = [part for part in re.split(r"[,\s]+", value) if part]
        if not isinstance(value, (list, tuple)):
            raise FieldError(name, "must be a list")
        if len(value) > max_items:
            raise FieldError(name, f"must have at most {max_items} entries")
        if len(value) < min_items:
            raise FieldError(name, f"must have at least {min_items} entr{'y' if min_items == 1 else 'ies'}")
        cleaned = tuple(item(f"{name}[{i}]", entry) for i, entry in enumerate(value))
        if len(set(cleaned)) != len(cleaned):
            raise FieldError(name, "has duplicate entries")
        return cleaned

    return check


def sip_password(name: str, value: Any) -> str:
    """Meta's sip_user_password: printable, single line, no surrounding spaces."""
    if not isinstance(value, str) or not value:
        raise FieldError(name, "must be a non-empty string")
    if len(value) > 256:
        raise FieldError(name, "must be at most 256 characters")
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise FieldError(name, "must not contain control characters or line breaks")
    if value != value.strip():
        raise FieldError(name, "must not start or end with spaces (Asterisk would drop them)")
    return value


# ------------------------------------------------------------------ the model


@dataclass(frozen=True)
class TrunkSettings:
    """Everything an admin can set about the trunk; None means "leave Asterisk's default"."""

    # names of the objects
    transport_name: str = "thoth-tls"
    endpoint_name: str = "wa.meta.vc"
    # transport (TLS only: Meta requires it)
    bind_address: str = "0.0.0.0"
    bind_port: int = 5061
    external_media_address: str | None = None
    external_signaling_address: str | None = None
    ca_list_file: str | None = "/etc/ssl/certs/ca-certificates.crt"
    cert_file: str | None = None
    priv_key_file: str | None = None
    method: str | None = "tlsv1_2"
    verify_client: bool | None = False  # Meta does no mTLS: never ask it for a client cert
    verify_server: bool | None = False
    allow_reload: bool | None = False
    tos: str | int | None = "cs3"
    cos: int | None = 3
    local_net: tuple[str, ...] = ()
    # aor
    qualify_frequency: int | None = 60
    contact: str = "sip:wa.meta.vc"
    # endpoint
    context: str = "from-meta"
    codecs: tuple[str, ...] = ("opus",)
    send_connected_line: bool | None = False  # Meta rejects re-INVITE/UPDATE
    rtp_keepalive: int | None = 0
    language: str | None = "en"
    user_eq_phone: bool | None = False
    t38_udptl: bool | None = False
    t38_udptl_ec: str | None = "none"
    fax_detect: bool | None = False
    trust_id_inbound: bool | None = False
    t38_udptl_nat: bool | None = False
    direct_media: bool | None = False
    media_encryption: str | None = "sdes"
    rtp_symmetric: bool | None = True
    dtmf_mode: str | None = "auto"
    force_rport: bool | None = True
    rewrite_contact: bool | None = False  # with yes Meta's ACK is lost, calls drop at ~32 s
    timers: str | None = "no"  # session timers re-INVITE; Meta answers 500
    media_use_received_transport: bool | None = True
    inbound_auth: bool = True  # challenge Meta's INVITEs with the numbers' digest credentials
    # identify: None = Meta's published list (config/meta-ip-ranges.txt)
    identify_match: tuple[str, ...] | None = None
    # dialplan
    fallback_dial: str | None = None
    fallback_timeout: int = 60

    def as_json(self) -> dict[str, Any]:
        return {k: list(val) if isinstance(val, tuple) else val for k, val in dataclasses.asdict(self).items()}


_BOOL = _omit(v.boolean)

VALIDATORS: dict[str, Validator] = {
    "transport_name": section_name,
    "endpoint_name": section_name,
    "bind_address": v.ip_address,
    "bind_port": v.port,
    "external_media_address": _omit(host_or_ip),
    "external_signaling_address": _omit(host_or_ip),
    "ca_list_file": _omit(file_path),
    "cert_file": _omit(file_path),
    "priv_key_file": _omit(file_path),
    "method": _omit(_choice("default", "unspecified", "tlsv1", "tlsv1_1", "tlsv1_2", "tlsv1_3", "sslv23")),
    "verify_client": _BOOL,
    "verify_server": _BOOL,
    "allow_reload": _BOOL,
    "tos": _omit(tos),
    "cos": _omit(_int(0, 7)),
    "local_net": _list(network, max_items=50),
    "qualify_frequency": _omit(_int(0, 86400)),
    "contact": sip_uri,
    "context": context_name,
    "codecs": _list(_codec, max_items=16, min_items=1),
    "send_connected_line": _BOOL,
    "rtp_keepalive": _omit(_int(0, 3600)),
    "language": _omit(_regex(_LANGUAGE, "is not a language code like en or pt_BR", 10)),
    "user_eq_phone": _BOOL,
    "t38_udptl": _BOOL,
    "t38_udptl_ec": _omit(_choice("none", "fec", "redundancy")),
    "fax_detect": _BOOL,
    "trust_id_inbound": _BOOL,
    "t38_udptl_nat": _BOOL,
    "direct_media": _BOOL,
    "media_encryption": _omit(_choice("sdes", "dtls", "no")),
    "rtp_symmetric": _BOOL,
    "dtmf_mode": _omit(_choice("rfc4733", "inband", "info", "auto", "auto_info")),
    "force_rport": _BOOL,
    "rewrite_contact": _BOOL,
    "timers": _omit(_choice("no", "yes", "required", "always", "forced")),
    "media_use_received_transport": _BOOL,
    "inbound_auth": v.boolean,
    "identify_match": _omit(_list(network, max_items=500, min_items=1)),
    "fallback_dial": _omit(dial_target),
    "fallback_timeout": _int(1, 600),
}

DEFAULTS = TrunkSettings()
assert set(VALIDATORS) == {f.name for f in dataclasses.fields(TrunkSettings)}, "every setting needs a validator"


def parse_trunk(*layers: Mapping[str, Any], layer_names: Sequence[str] = ()) -> TrunkSettings:
    """Validate layers of raw settings (later wins) into TrunkSettings; FieldError on the first bad one.

    null (or "", since TOML has no null) means "do not write this option, leave Asterisk's
    default" - the same None that GET shows for an omitted option; options that are always
    written refuse it.
    """
    merged: dict[str, Any] = {}
    for index, layer in enumerate(layers):
        if not isinstance(layer, Mapping):
            raise FieldError("body", "must be a JSON object")
        for key, value in layer.items():
            if key not in VALIDATORS:
                where = f" (in {layer_names[index]})" if index < len(layer_names) else ""
                raise FieldError(key, f"unknown trunk setting{where}; expected one of {', '.join(VALIDATORS)}")
            if value is None and not omittable(key):
                raise FieldError(key, "must not be null: this option is always written")
            merged[key] = value
    values = {key: VALIDATORS[key](key, raw) for key, raw in merged.items()}
    return dataclasses.replace(DEFAULTS, **values)


def omittable(key: str) -> bool:
    """Whether `key` may be None (option left out of the file)."""
    return bool(getattr(VALIDATORS[key], "omittable", False))


def apply_problems(settings: TrunkSettings) -> list[FieldError]:
    """Settings that render but would not give a working trunk; apply refuses them."""
    problems = []
    for key in ("cert_file", "priv_key_file"):
        if getattr(settings, key) is None:
            problems.append(FieldError(key, "is required: the TLS transport for Meta cannot start without it"))
    return problems


# ------------------------------------------------------------------ phones


@dataclass(frozen=True)
class TrunkPhone:
    """What the trunk needs from a Phone row (the directory owns the rest)."""

    number: str  # E.164 with '+'
    password: str | None = field(default=None, repr=False)  # Meta's sip_user_password
    sip_hostname: str | None = None
    id: int | None = None

    @property
    def digits(self) -> str:
        return self.number.lstrip("+")

    @property
    def section(self) -> str:
        return PHONE_PREFIX + self.digits


def check_phone(phone: TrunkPhone) -> TrunkPhone:
    label = f"phones[{phone.number}]"
    number = v.e164(f"{label}.number", phone.number)
    password = None if phone.password is None else sip_password(f"{label}.sip_user_password", phone.password)
    hostname = None if phone.sip_hostname is None else v.hostname(f"{label}.sip_hostname", phone.sip_hostname)
    return TrunkPhone(number, password, hostname, phone.id)


# ------------------------------------------------------------------ rendering


class RenderError(FieldError):
    """A template (usually an admin override) failed; `field` is "template"."""

    def __init__(self, message: str) -> None:
        super().__init__("template", message, 400)


@dataclass(frozen=True)
class Rendered:
    files: dict[str, str]  # file name -> text, exactly as it will be written
    phone_ids: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()

    def masked(self) -> dict[str, str]:
        """The files with passwords replaced by ***, for previews and stored diffs."""
        return {name: mask_secrets(text) for name, text in self.files.items()}


def _finalize(value: Any) -> str:
    if isinstance(value, jinja2.Undefined):
        return str(value)  # StrictUndefined raises here
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        raise RenderError("a template printed an unset (None) value; wrap it in {% if ... is not none %}")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        try:
            return escape_value(value)
        except ValueError as exc:
            raise RenderError(f"a template printed a value with a line break: {exc}") from None
    raise RenderError(f"a template printed a {type(value).__name__}; print its items one per line instead")


class _ChoiceLoader(jinja2.BaseLoader):
    """First folder that has the template wins (like jinja2.ChoiceLoader), but a cached
    template is also stale when an override appears or disappears in an earlier folder,
    so an admin's new override file is used at the next render without a restart."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        if "/" in template or "\\" in template or template.startswith("."):
            raise jinja2.TemplateNotFound(template)
        for index, folder in enumerate(self.folders):
            path = folder / template
            try:
                source = path.read_text(encoding="utf-8")
                mtime = path.stat().st_mtime_ns
            except (FileNotFoundError, NotADirectoryError):
                continue
            earlier = [f / template for f in self.folders[:index]]

            def uptodate(path: Path = path, mtime: int = mtime, earlier: list[Path] = earlier) -> bool:
                try:
                    return path.stat().st_mtime_ns == mtime and not any(p.exists() for p in earlier)
                except FileNotFoundError:
                    return False

            return source, str(path), uptodate
        raise jinja2.TemplateNotFound(template)


@functools.lru_cache(maxsize=8)
def _environment(override_dir: str | None) -> jinja2.Environment:
    """Sandboxed: an admin's override template may loop, branch, filter and include, but never
    reach Python internals (`__class__`, `__globals__`, ...) to run code as the service user."""
    folders = [Path(override_dir)] if override_dir else []
    folders += [data_dir("asterisk_templates"), data_dir("dialplan")]
    return jinja2.sandbox.ImmutableSandboxedEnvironment(
        loader=_ChoiceLoader(folders),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _where(exc: BaseException, template_name: str) -> str:
    """`aor.conf.j2 line 4`: the innermost template frame, so an error inside an included
    override names the admin's file, not the top-level one that included it."""
    where = template_name
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            where = f"{Path(filename).name} line {tb.tb_lineno}"
        tb = tb.tb_next
    return where


def read_ranges(text: str, source: str = RANGES_FILE) -> tuple[str, ...]:
    """Parse the admin-editable ranges file: one network per line, '#' comments."""
    ranges = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            ranges.append(network(f"{source}:{lineno}", entry))
    if not ranges:
        raise FieldError(source, "lists no IP ranges")
    return tuple(dict.fromkeys(ranges))


def ranges_file(override_dir: Path | None) -> Path:
    if override_dir is not None and (override_dir / RANGES_FILE).is_file():
        return override_dir / RANGES_FILE
    return data_dir("config") / RANGES_FILE


def render(
    settings: TrunkSettings,
    phones: Iterable[TrunkPhone] = (),
    *,
    app: str = "thoth-pbx",
    override_dir: Path | None = None,
) -> Rendered:
    """Render both files; raises FieldError (bad phone, ranges file) or RenderError (template)."""
    checked = sorted((check_phone(p) for p in phones), key=lambda p: p.number)
    warnings: list[str] = []
    match = settings.identify_match
    if match is None:
        path = ranges_file(override_dir)
        match = read_ranges(path.read_text(encoding="utf-8"), path.name)
    inbound_auths = [p.section for p in checked if p.password is not None] if settings.inbound_auth else []
    trunk_endpoint = {
        "name": settings.endpoint_name,
        "auth": inbound_auths,
        "outbound_auth": None,
        "from_user": None,
        "from_domain": None,
    }
    phone_views: list[dict[str, Any]] = []
    for phone in checked:
        if phone.password is None:
            warnings.append(f"{phone.number} has no sip_user_password yet: no digest auth for it")
        if phone.sip_hostname is None:
            warnings.append(f"{phone.number} has no sip_hostname: business-initiated calls get no from_domain")
        phone_views.append(
            {
                "number": phone.number,
                "digits": phone.digits,
                "auth_name": phone.section,
                "password": phone.password,
                "endpoint": {
                    "name": phone.section,
                    "auth": [],
                    "outbound_auth": phone.section if phone.password is not None else None,
                    "from_user": phone.number,
                    "from_domain": phone.sip_hostname,
                },
            }
        )
    for problem in apply_problems(settings):
        warnings.append(f"{problem.field} {problem.message}")
    if settings.fallback_dial is None:
        warnings.append("fallback_dial is not set: calls are hung up while thoth-pbx is not connected to ARI")
    context = {
        "t": settings,
        "phones": phone_views,
        "trunk_endpoint": trunk_endpoint,
        "identify_match": list(match),
        "app": app,
    }
    env = _environment(str(override_dir) if override_dir else None)
    files = {}
    for name in FILES:
        template_name = name + ".j2"
        try:
            text = env.get_template(template_name).render(context)
        except FieldError:
            raise
        except jinja2.TemplateSyntaxError as exc:
            raise RenderError(f"{exc.name or template_name} line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise RenderError(f"{_where(exc, template_name)}: {exc}") from None
        try:
            parse(text)
        except ConfSyntaxError as exc:
            raise RenderError(f"{name} as rendered is not valid Asterisk config: {exc}") from None
        files[name] = text
    return Rendered(files, tuple(p.id for p in checked if p.id is not None), tuple(warnings))
