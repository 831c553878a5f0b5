"""The directory: WABA accounts, phones and Bitrix app instances, validated and stored.

One declarative `Resource` per collection says which fields may be written, how each is
validated and which are secrets; the same code serves the admin API and the CLI. Every
write is validated completely before anything is stored, so bad input never half-writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from thoth_pbx.core import validation as v
from thoth_pbx.core.secrets import generate_token, mask
from thoth_pbx.core.validation import FieldError
from thoth_pbx.features.directory.models import AppInstance, Phone, WabaAccount
from thoth_pbx.store.base import Base
from thoth_pbx.store.types import secret_box

Validator = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Field:
    validate: Validator
    required: bool = False
    secret: bool = False  # masked in output
    nullable: bool = False


@dataclass(frozen=True)
class Resource:
    name: str  # collection name in the API
    model: type[Base]
    fields: dict[str, Field]
    # fields shown in output besides the writable ones
    read_only: tuple[str, ...] = ()
    unique: dict[str, str] = field(default_factory=dict)  # constraint column -> API field
    on_create: Callable[[Any], None] | None = None


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _opt(validator: Validator) -> Validator:
    def check(name: str, value: Any) -> Any:
        return None if value is None or value == "" else validator(name, value)

    check.reference = getattr(validator, "reference", None)  # type: ignore[attr-defined]
    return check


def _datetime(name: str, value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise FieldError(name, "must be an ISO-8601 date-time with a timezone")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FieldError(name, "must be an ISO-8601 date-time with a timezone") from None
    if parsed.tzinfo is None:
        raise FieldError(name, "must include a timezone, e.g. 2026-12-01T10:00:00+00:00")
    return parsed


def _fk(model: type[Base], label: str) -> Validator:
    # checked for existence in `_check_references`, here only the type
    def check(name: str, value: Any) -> int:
        return v.integer(name, value, minimum=1)

    check.reference = (model, label)  # type: ignore[attr-defined]
    return check


def _new_waba_secrets(account: WabaAccount) -> None:
    box = secret_box()
    verify_token = generate_token(24)
    api_key = generate_token(24)
    account.verify_token = verify_token
    account.verify_token_fingerprint = box.fingerprint(verify_token)
    account.api_key = api_key
    account.api_key_fingerprint = box.fingerprint(api_key)


WABAS = Resource(
    name="wabas",
    model=WabaAccount,
    fields={
        "name": Field(lambda n, x: v.text(n, x, max_len=200), required=True),
        "waba_id": Field(_opt(v.digits_id), nullable=True),
        "access_token": Field(lambda n, x: v.text(n, x, max_len=1000, min_len=16), required=True, secret=True),
        "token_expires_at": Field(_opt(_datetime), nullable=True),
        "app_secret": Field(_opt(lambda n, x: v.text(n, x, max_len=200, min_len=8)), secret=True, nullable=True),
        "app_id": Field(_opt(v.digits_id), nullable=True),
    },
    read_only=("verify_token", "api_key", "created_at", "updated_at"),
    unique={"waba_id": "waba_id"},
    on_create=_new_waba_secrets,
)

PHONES = Resource(
    name="phones",
    model=Phone,
    fields={
        "number": Field(v.e164, required=True),
        "phone_number_id": Field(v.digits_id, required=True),
        "waba_account_id": Field(_fk(WabaAccount, "WABA account"), required=True),
        "app_instance_id": Field(_opt(_fk(AppInstance, "app instance")), nullable=True),
        "sms_service": Field(v.boolean),
        "calling_enabled": Field(v.boolean),
        "sip_enabled": Field(v.boolean),
        "sip_hostname": Field(_opt(v.hostname), nullable=True),
        "sip_port": Field(v.port),
        "srtp_key_exchange": Field(lambda n, x: v.choice(n, x, ("SDES",))),
        # the configured Asterisk whose trunk carries its calls; checked against the settings
        # by Directory (null: the first server)
        "asterisk": Field(_opt(lambda n, x: v.text(n, x, max_len=32)), nullable=True),
    },
    read_only=("last_error", "calling_state", "trunk_needs_apply", "created_at", "updated_at"),
    unique={"number": "number", "phone_number_id": "phone_number_id"},
)

INSTANCES = Resource(
    name="instances",
    model=AppInstance,
    fields={
        "member_id": Field(lambda n, x: v.text(n, x, max_len=64), required=True),
        "domain": Field(v.hostname, required=True),
        "client_endpoint": Field(_opt(lambda n, x: _https_url(n, x)), nullable=True),
        "access_token": Field(_opt(lambda n, x: v.text(n, x, max_len=500)), secret=True, nullable=True),
        "refresh_token": Field(_opt(lambda n, x: v.text(n, x, max_len=500)), secret=True, nullable=True),
        "application_token": Field(_opt(lambda n, x: v.text(n, x, max_len=500)), secret=True, nullable=True),
        "rate_per_s": Field(lambda n, x: float(v.integer(n, x, minimum=1, maximum=50))),
        "rate_burst": Field(lambda n, x: v.integer(n, x, minimum=1, maximum=1000)),
    },
    read_only=("status", "status_detail", "expires_at", "created_at", "updated_at"),
    unique={"member_id": "member_id"},
)

RESOURCES = {r.name: r for r in (WABAS, PHONES, INSTANCES)}


def _https_url(name: str, value: Any) -> str:
    url = v.text(name, value, max_len=500)
    if not (url.startswith("https://") or url.startswith("http://")):
        raise FieldError(name, "must be an http(s):// URL")
    return url


# Adds computed output fields (e.g. the WABA callback URL): (row, output, reveal) -> None.
Presenter = Callable[[Any, dict[str, Any], bool], None]


def serialize(
    resource: Resource, obj: Any, *, reveal: bool = False, present: Presenter | None = None
) -> dict[str, Any]:
    """Output form: secrets masked; `reveal` shows copy-me values (verify token, api-key)."""
    out: dict[str, Any] = {"id": obj.id}
    for name, spec in resource.fields.items():
        value = getattr(obj, name)
        out[name] = mask(value) if spec.secret else _iso(value)
    for name in resource.read_only:
        value = getattr(obj, name)
        if name in ("verify_token", "api_key") and not reveal:
            value = mask(value)
        out[name] = _iso(value)
    if present is not None:
        present(obj, out, reveal)
    return out


def clean(resource: Resource, data: Any, *, partial: bool) -> dict[str, Any]:
    """Validate a JSON body fully; raise FieldError for the first bad or unknown field."""
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    for name in data:
        if name in resource.read_only or name == "id":
            raise FieldError(name, "is read-only")
        if name not in resource.fields:
            raise FieldError(name, f"unknown field; expected one of {', '.join(resource.fields)}")
    values: dict[str, Any] = {}
    for name, spec in resource.fields.items():
        if name not in data:
            if spec.required and not partial:
                raise FieldError(name, "is required")
            continue
        raw = data[name]
        if raw is None and not spec.nullable:
            raise FieldError(name, "must not be null")
        values[name] = spec.validate(name, raw)
        if values[name] is None and spec.required:
            raise FieldError(name, "is required")
    return values


class Directory:
    """CRUD over the three collections, with reference and uniqueness checks."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        presenters: dict[str, Presenter] | None = None,
        *,
        asterisks: tuple[str, ...] = ("main",),
    ) -> None:
        """`asterisks`: the configured Asterisk servers' names, the first one first (a phone
        stored with none belongs to it)."""
        self._sessions = sessions
        self._presenters = dict(presenters or {})
        self._asterisks = asterisks
        # called with (collection name, id) after every committed write (caches invalidate)
        self.listeners: list[Callable[[str, int], None]] = []

    def _out(self, resource: Resource, obj: Any, *, reveal: bool = False) -> dict[str, Any]:
        out = serialize(resource, obj, reveal=reveal, present=self._presenters.get(resource.name))
        if resource is PHONES:
            out["asterisk"] = out["asterisk"] or self._asterisks[0]
        return out

    def _check_asterisk(self, values: dict[str, Any]) -> None:
        """A phone's Asterisk is one the settings configure; the first one is stored as null,
        so renaming it (`asterisk_name`) keeps its phones."""
        name = values.get("asterisk")
        if name is None:
            return
        if name not in self._asterisks:
            raise FieldError("asterisk", f"no Asterisk server named {name!r}; configured: {', '.join(self._asterisks)}")
        if name == self._asterisks[0]:
            values["asterisk"] = None

    def _changed(self, resource: Resource, obj_id: int) -> None:
        for listener in self.listeners:
            listener(resource.name, obj_id)

    async def list(self, resource: Resource) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = (await session.scalars(select(resource.model).order_by(resource.model.id))).all()  # type: ignore[attr-defined]
            return [self._out(resource, row) for row in rows]

    async def get(self, resource: Resource, obj_id: int, *, reveal: bool = True) -> dict[str, Any]:
        async with self._sessions() as session:
            return self._out(resource, await self._load(session, resource, obj_id), reveal=reveal)

    async def create(self, resource: Resource, data: Any) -> dict[str, Any]:
        values = clean(resource, data, partial=False)
        return await self._write(resource, None, values)

    async def update(self, resource: Resource, obj_id: int, data: Any) -> dict[str, Any]:
        values = clean(resource, data, partial=True)
        return await self._write(resource, obj_id, values)

    async def delete(self, resource: Resource, obj_id: int) -> None:
        async with self._sessions() as session, session.begin():
            obj = await self._load(session, resource, obj_id)
            if isinstance(obj, WabaAccount):
                count = len((await session.scalars(select(Phone.id).where(Phone.waba_account_id == obj.id))).all())
                if count:
                    raise FieldError(
                        "phones", f"this account still has {count} phone(s); delete or move them first", 409
                    )
            await session.delete(obj)
        self._changed(resource, obj_id)

    async def _write(self, resource: Resource, obj_id: int | None, values: dict[str, Any]) -> dict[str, Any]:
        if resource is PHONES:
            self._check_asterisk(values)
        async with self._sessions() as session:
            try:
                async with session.begin():
                    await self._check_references(session, resource, values)
                    obj: Any  # a WabaAccount, Phone or AppInstance (the resource's model)
                    if obj_id is None:
                        obj = resource.model()
                        if resource.on_create:
                            resource.on_create(obj)
                        session.add(obj)
                    else:
                        obj = await self._load(session, resource, obj_id)
                    for name, value in values.items():
                        setattr(obj, name, value)
                    await session.flush()
                    await self._check_unique(session, resource, obj)
            except IntegrityError as exc:
                raise self._integrity_error(resource, exc) from None
            self._changed(resource, obj.id)
            return self._out(resource, obj, reveal=obj_id is None)

    async def _load(self, session: AsyncSession, resource: Resource, obj_id: int) -> Any:
        obj = await session.get(resource.model, obj_id)
        if obj is None:
            raise FieldError("id", f"no {resource.name[:-1]} with id {obj_id}", 404)
        return obj

    async def _check_references(self, session: AsyncSession, resource: Resource, values: dict[str, Any]) -> None:
        for name, value in values.items():
            ref = getattr(resource.fields[name].validate, "reference", None)
            if ref is None or value is None:
                continue
            model, label = ref
            if await session.get(model, value) is None:
                raise FieldError(name, f"no {label} with id {value}")

    async def _check_unique(self, session: AsyncSession, resource: Resource, obj: Any) -> None:
        # IntegrityError tells us a constraint failed but not portably which one; ask.
        for column, api_field in resource.unique.items():
            value = getattr(obj, column)
            if value is None:
                continue
            clash = await session.scalar(
                select(resource.model.id).where(  # type: ignore[attr-defined]
                    getattr(resource.model, column) == value,
                    resource.model.id != obj.id,  # type: ignore[attr-defined]
                )
            )
            if clash is not None:
                raise FieldError(api_field, f"{value} is already used by {resource.name[:-1]} {clash}", 409)

    def _integrity_error(self, resource: Resource, exc: IntegrityError) -> FieldError:
        message = str(exc.orig)
        for column, api_field in resource.unique.items():
            if column in message:
                return FieldError(api_field, "is already in use", 409)
        return FieldError("body", "conflicts with stored data", 409)

    async def rotate_waba_secret(self, obj_id: int, which: str) -> dict[str, Any]:
        """Issue a fresh verify token or api-key (the old one stops working at once)."""
        if which not in ("verify_token", "api_key"):
            raise FieldError("secret", "must be verify_token or api_key")
        async with self._sessions() as session, session.begin():
            account: WabaAccount = await self._load(session, WABAS, obj_id)
            value = generate_token(24)
            setattr(account, which, value)
            setattr(account, f"{which}_fingerprint", secret_box().fingerprint(value))
        self._changed(WABAS, obj_id)
        return self._out(WABAS, account, reveal=True)
