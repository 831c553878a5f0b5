"""Typed settings: one TOML file plus THOTH_* environment overrides.

Every key has exactly one parser; a wrong or missing value raises `SettingsError` whose
message names the key (TOML name and environment name) and says what is wrong, so the
service fails at start with one readable line instead of later with a traceback.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ENV_PREFIX = "THOTH_"
# an Asterisk server's name: in settings, the phone's `asterisk`, metrics labels and lock keys
ASTERISK_NAME = r"[a-z0-9][a-z0-9_-]{0,31}"
ASTERISK_NAME_HINT = "must be 1-32 lowercase letters, digits, _ or - (starting with a letter or digit)"


class SettingsError(ValueError):
    """A setting is wrong; `key` is the TOML key, `env` its environment name."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        # a key inside an [[asterisk]] table has no environment name: only the file sets it
        self.env = None if "[" in key else ENV_PREFIX + key.upper()
        super().__init__(f"setting {key} ({self.env or 'config file only'}): {message}")


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class AmiTarget:
    host: str
    port: int
    user: str
    secret: str = field(repr=False)

    def __str__(self) -> str:  # never shows the secret
        return f"tcp://{self.user}:***@{self.host}:{self.port}"


@dataclass(frozen=True)
class AriTarget:
    base_url: str  # scheme://host:port, no credentials
    user: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.base_url} (user {self.user})"


@dataclass(frozen=True)
class AsteriskServer:
    """One Asterisk thoth-pbx drives: its AMI and ARI, where its trunk files go, how it reloads.
    The top-level `ami_url` / `ari_url` / `asterisk_config_dir` / `asterisk_mode` are the server
    named `asterisk_name`; each `[[asterisk]]` table of the config file adds one more."""

    name: str
    ami: AmiTarget | None
    ari: AriTarget | None
    config_dir: Path
    mode: str
    # trunk settings of this server over the `[trunk]` table (its bind address, certificate...)
    trunk: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    listen: HostPort
    public_url: str
    database_url: str
    secret_key_file: Path
    admin_user: str
    admin_password: str | None = field(repr=False)
    admin_password_file: Path
    ami: AmiTarget | None
    ari: AriTarget | None
    ari_app: str
    asterisk_config_dir: Path
    asterisk_mode: str
    template_override_dir: Path | None
    meta_graph_url: str
    meta_api_version: str
    bitrix_client_id: str | None
    bitrix_client_secret: str | None = field(repr=False)
    bitrix_oauth_url: str
    log_level: str
    recordings_dir: Path
    media_dir: Path
    # several instances on one PostgreSQL: how often a standby tries to take the Stasis app
    stasis_retry_seconds: float = 1.0
    # the outbox's claims: the name this instance claims jobs under (default hostname:pid) and
    # how long a claim holds without being renewed (another instance then takes the job)
    instance_name: str | None = None
    outbox_lease_seconds: float = 30.0
    # several instances: how often each looks for webhooks stored but never dispatched (an
    # instance killed between the two leaves them for the others)
    inbox_sweep_seconds: float = 5.0
    trunk: Mapping[str, Any] = field(default_factory=dict)
    calls: Mapping[str, Any] = field(default_factory=dict)
    messaging: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None
    # several Asterisk servers: the name of the one the top-level keys describe, and the others
    asterisk_name: str = "main"
    more_asterisks: tuple[AsteriskServer, ...] = ()

    @property
    def asterisks(self) -> tuple[AsteriskServer, ...]:
        """Every configured Asterisk, the top-level one first."""
        main = AsteriskServer(self.asterisk_name, self.ami, self.ari, self.asterisk_config_dir, self.asterisk_mode)
        return (main, *self.more_asterisks)

    def asterisk(self, name: str | None) -> AsteriskServer | None:
        """The server called `name` (None: the top-level one), None if there is none such."""
        wanted = name or self.asterisk_name
        return next((server for server in self.asterisks if server.name == wanted), None)


# ---------------------------------------------------------------- parsers (pure)

_HOST_RE = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")


def _host(key: str, value: str) -> str:
    host = value.strip("[]")
    if _HOST_RE.match(host) or _is_ip(host):
        return host
    raise SettingsError(key, f"{value!r} is not a host name or IP address")


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _port(key: str, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SettingsError(key, f"port {value!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise SettingsError(key, f"port {port} is outside 1..65535")
    return port


def parse_listen(key: str, value: Any) -> HostPort:
    text = _text(key, value)
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise SettingsError(key, f"{text!r} must be host:port, e.g. 127.0.0.1:8080")
    return HostPort(_host(key, host), _port(key, port))


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SettingsError(key, f"expected a string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise SettingsError(key, "must not be empty")
    if any(ch in text for ch in "\r\n\0"):
        raise SettingsError(key, "must be a single line")
    return text


def _http_url(key: str, value: Any) -> str:
    text = _text(key, value).rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(key, f"{text!r} is not an http(s):// URL")
    return text


_SECRET_PARAM = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with the password in the user part and in query parameters (`?password=`,
    asyncpg's and libpq's spelling) replaced by `***`, for output."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = "&".join(
        f"{name}=***" if _SECRET_PARAM.search(name) else pair
        for pair in parts.query.split("&")
        if pair
        for name in [pair.split("=", 1)[0]]
    )
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def parse_database_url(key: str, value: Any) -> str:
    text = _text(key, value)
    scheme = text.split(":", 1)[0]
    aliases = {
        "sqlite": "sqlite+thoth",  # store/sqlite_inline.py; sqlite+aiosqlite:// still works
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
    }
    if scheme in aliases:
        return aliases[scheme] + text[len(scheme) :]
    if scheme in ("sqlite+thoth", "sqlite+aiosqlite", "postgresql+asyncpg"):
        return text
    raise SettingsError(key, f"unsupported database {scheme!r}; use sqlite:///path or postgresql://")


def parse_ami_url(key: str, value: Any) -> AmiTarget:
    text = _text(key, value)
    parts = urlsplit(text)
    if parts.scheme != "tcp":
        raise SettingsError(key, "must look like tcp://user:secret@host:port")
    if not parts.username or parts.password is None:
        raise SettingsError(key, "user and secret are required: tcp://user:secret@host:port")
    try:
        port = parts.port or 5038
    except ValueError:
        raise SettingsError(key, "port is not a number in 1..65535") from None
    return AmiTarget(
        host=_host(key, parts.hostname or ""),
        port=_port(key, port),
        user=unquote(parts.username),
        secret=unquote(parts.password),
    )


def parse_ari_url(key: str, value: Any) -> AriTarget:
    text = _text(key, value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(key, "must look like http://user:password@host:port")
    if not parts.username or parts.password is None:
        raise SettingsError(key, "user and password are required: http://user:password@host:port")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 8088)
    except ValueError:
        raise SettingsError(key, "port is not a number in 1..65535") from None
    host = _host(key, parts.hostname)
    shown_host = f"[{host}]" if ":" in host else host
    return AriTarget(
        base_url=f"{parts.scheme}://{shown_host}:{_port(key, port)}",
        user=unquote(parts.username),
        password=unquote(parts.password),
    )


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(key: str, value: Any) -> str:
        text = _text(key, value)
        if text not in choices:
            raise SettingsError(key, f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def _regex(pattern: str, hint: str, *, secret: bool = False) -> Callable[[str, Any], str]:
    """A parser for a value matching `pattern`; the error quotes the value unless it is a secret
    (a rejected password is still someone's password)."""
    compiled = re.compile(pattern)

    def parse(key: str, value: Any) -> str:
        text = _text(key, value)
        if not compiled.fullmatch(text):
            raise SettingsError(key, f"the value given {hint}" if secret else f"{text!r} {hint}")
        return text

    return parse


def _seconds(low: float, high: float) -> Callable[[str, Any], float]:
    def parse(key: str, value: Any) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise SettingsError(key, f"{value!r} is not a number of seconds") from None
        if not low <= seconds <= high:
            raise SettingsError(key, f"{seconds:g} is outside {low:g}..{high:g} seconds")
        return seconds

    return parse


def _path(key: str, value: Any) -> Path:
    return Path(_text(key, value)).expanduser()


# key -> (parser, default). A default of None means "not configured".
_SPEC: dict[str, tuple[Callable[[str, Any], Any], Any]] = {
    "listen": (parse_listen, "127.0.0.1:8080"),
    "public_url": (_http_url, None),
    "database_url": (parse_database_url, "sqlite:///var/thoth-pbx.sqlite3"),
    "secret_key_file": (_path, "var/secret.key"),
    "admin_user": (_regex(r"[A-Za-z0-9._@-]{1,64}", "may only use letters, digits and ._@-"), "admin"),
    "admin_password": (_regex(r"\S{8,256}", "must be 8 to 256 characters without spaces", secret=True), None),
    "admin_password_file": (_path, "var/admin-password"),
    "ami_url": (parse_ami_url, None),
    "ari_url": (parse_ari_url, None),
    "ari_app": (_regex(r"[A-Za-z0-9_-]{1,64}", "may only use letters, digits, _ and -"), "thoth-pbx"),
    "asterisk_config_dir": (_path, "/etc/asterisk"),
    "asterisk_mode": (_choice("plain", "freepbx"), "plain"),
    "asterisk_name": (_regex(ASTERISK_NAME, ASTERISK_NAME_HINT), "main"),
    "template_override_dir": (_path, None),
    "meta_graph_url": (_http_url, "https://graph.facebook.com"),
    "meta_api_version": (_regex(r"v\d{1,3}\.\d{1,2}", "must look like v25.0"), "v25.0"),
    "bitrix_client_id": (_text, None),
    "bitrix_client_secret": (_text, None),
    "bitrix_oauth_url": (_http_url, "https://oauth.bitrix.info/oauth/token"),
    "log_level": (_choice("debug", "info", "warning", "error"), "info"),
    "recordings_dir": (_path, "var/recordings"),
    "media_dir": (_path, "var/media"),
    "stasis_retry_seconds": (_seconds(0.1, 60.0), 1.0),
    "instance_name": (_regex(r"[A-Za-z0-9._:@-]{1,128}", "may only use letters, digits and ._:@-"), None),
    "outbox_lease_seconds": (_seconds(0.5, 3600.0), 30.0),
    "inbox_sweep_seconds": (_seconds(0.1, 600.0), 5.0),
}


def _table(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SettingsError(key, 'must be a table, e.g. trunk = { bind_address = "10.0.0.2" }')
    return dict(value)


_SECTIONS = {"trunk", "calls", "messaging"}  # tables passed on raw; their owners validate them
# `[[asterisk]]`: one table per further Asterisk server; its keys and whether each is required
_ASTERISK_KEYS: dict[str, tuple[Callable[[str, Any], Any], bool]] = {
    "name": (_regex(ASTERISK_NAME, ASTERISK_NAME_HINT), True),
    "ami_url": (parse_ami_url, True),
    "ari_url": (parse_ari_url, True),
    "config_dir": (_path, True),
    "mode": (_choice("plain", "freepbx"), False),
    "trunk": (_table, False),  # checked by the trunk feature, like [trunk]
}


def setting_keys() -> list[str]:
    return list(_SPEC)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the TOML file (THOTH_CONFIG or `path`), then apply THOTH_* overrides."""
    env = dict(os.environ if environ is None else environ)
    config_path = Path(path) if path else (Path(env["THOTH_CONFIG"]) if env.get("THOTH_CONFIG") else None)
    raw: dict[str, Any] = {}
    if config_path is not None:
        raw = _read_toml(config_path)
    values: dict[str, Any] = {}
    for key, (parser, default) in _SPEC.items():
        env_name = ENV_PREFIX + key.upper()
        if env_name in env and env[env_name] != "":
            value = env[env_name]
        elif key in raw:
            value = raw[key]
        else:
            value = default
        values[key] = None if value is None else parser(key, value)
    listen: HostPort = values["listen"]
    return Settings(
        listen=listen,
        public_url=values["public_url"] or f"http://{listen}",
        database_url=values["database_url"],
        secret_key_file=values["secret_key_file"],
        admin_user=values["admin_user"],
        admin_password=values["admin_password"],
        admin_password_file=values["admin_password_file"],
        ami=values["ami_url"],
        ari=values["ari_url"],
        ari_app=values["ari_app"],
        asterisk_config_dir=values["asterisk_config_dir"],
        asterisk_mode=values["asterisk_mode"],
        template_override_dir=values["template_override_dir"],
        meta_graph_url=values["meta_graph_url"],
        meta_api_version=values["meta_api_version"],
        bitrix_client_id=values["bitrix_client_id"],
        bitrix_client_secret=values["bitrix_client_secret"],
        bitrix_oauth_url=values["bitrix_oauth_url"],
        log_level=values["log_level"],
        recordings_dir=values["recordings_dir"],
        media_dir=values["media_dir"],
        stasis_retry_seconds=values["stasis_retry_seconds"],
        instance_name=values["instance_name"],
        outbox_lease_seconds=values["outbox_lease_seconds"],
        inbox_sweep_seconds=values["inbox_sweep_seconds"],
        trunk=dict(raw.get("trunk", {})),
        calls=dict(raw.get("calls", {})),
        messaging=dict(raw.get("messaging", {})),
        source=config_path,
        asterisk_name=values["asterisk_name"],
        more_asterisks=_more_asterisks(raw.get("asterisk", []), values),
    )


def _more_asterisks(tables: list[dict[str, Any]], values: Mapping[str, Any]) -> tuple[AsteriskServer, ...]:
    """The `[[asterisk]]` tables, each checked whole; names and ARI/AMI addresses are unique
    (two entries for one Asterisk would take its Stasis app from each other)."""
    servers: list[AsteriskServer] = []
    seen_names = {values["asterisk_name"]}
    seen_ari = {values["ari_url"].base_url} if values["ari_url"] is not None else set()
    seen_ami = {(values["ami_url"].host, values["ami_url"].port)} if values["ami_url"] is not None else set()
    for n, table in enumerate(tables):
        where = f"asterisk[{n}]"
        unknown = sorted(set(table) - set(_ASTERISK_KEYS))
        if unknown:
            raise SettingsError(
                f"{where}.{unknown[0]}", f"unknown key; an [[asterisk]] table takes {', '.join(_ASTERISK_KEYS)}"
            )
        got: dict[str, Any] = {}
        for key, (parser, required) in _ASTERISK_KEYS.items():
            if key not in table:
                if required:
                    raise SettingsError(f"{where}.{key}", "is required in every [[asterisk]] table")
                continue
            got[key] = parser(f"{where}.{key}", table[key])
        name, ami, ari = got["name"], got["ami_url"], got["ari_url"]
        if name in seen_names:
            raise SettingsError(
                f"{where}.name",
                f"{name!r} names another Asterisk already (asterisk_name is {values['asterisk_name']!r})",
            )
        if ari.base_url in seen_ari:
            raise SettingsError(f"{where}.ari_url", f"{ari.base_url} is another entry's Asterisk already")
        if (ami.host, ami.port) in seen_ami:
            raise SettingsError(f"{where}.ami_url", f"{ami.host}:{ami.port} is another entry's Asterisk already")
        seen_names.add(name)
        seen_ari.add(ari.base_url)
        seen_ami.add((ami.host, ami.port))
        servers.append(
            AsteriskServer(name, ami, ari, got["config_dir"], got.get("mode", "plain"), dict(got.get("trunk", {})))
        )
    if servers and values["ari_url"] is None:
        raise SettingsError("ari_url", "is required when [[asterisk]] tables add more servers (the first server)")
    return tuple(servers)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise SettingsError("config", f"file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("config", f"{path} is not valid TOML: {exc}") from None
    for key, value in raw.items():
        if key == "asterisk":
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise SettingsError(key, "must be [[asterisk]] tables, one per further Asterisk server")
        elif key in _SECTIONS:
            if not isinstance(value, dict):
                raise SettingsError(key, f"[{key}] must be a table")
        elif key not in _SPEC:
            raise SettingsError(key, f"unknown key in {path}")
    return raw
