"""The template command an operator types in an Open Lines chat (or a CRM SMS carries), checked
against the synchronised templates before anything is sent (pure).

    template-NAME+LANG                       a template without variables
    template-NAME+LANG+value1|value2         body variables {{1}}, {{2}} in order
    ...|header=https://host/file.pdf         the header's media (IMAGE, VIDEO, DOCUMENT header)
    ...|header=text                          the header's variable (TEXT header with {{1}})
    ...|button0=value                        the parameter of button 0 (a URL button's {{1}},
                                             a COPY_CODE button's code, a QUICK_REPLY payload)

`template+NAME+LANG...` (the predecessor's form) is accepted too; a CRM SMS may leave the
`template-` prefix out altogether (sms.py decides when such a text is a command). Values are
separated by `|` and may contain `+`; an empty value is refused (Meta refuses empty text
parameters). Components and parameter shapes: developers.facebook.com/docs/whatsapp/cloud-api/
guides/send-message-templates and .../reference/messages#template-object."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_NAME = r"(?P<name>[a-z0-9_]{1,512})"
_LANG = r"(?P<lang>[A-Za-z]{2,3}(?:_[A-Za-z0-9]{2,4})?)"
_PREFIXED = re.compile(rf"\s*template[-+]{_NAME}\+{_LANG}(?:\+(?P<rest>.*))?\s*", re.S)
_BARE = re.compile(rf"\s*{_NAME}\+{_LANG}(?:\+(?P<rest>.*))?\s*", re.S)
_LABEL = re.compile(r"(?P<label>header|button(?P<index>\d{1,2}))=(?P<value>.*)", re.S)
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MEDIA_HEADERS = {"IMAGE": "image", "VIDEO": "video", "DOCUMENT": "document"}
_BUTTON_PARAMETER = {"URL": "url", "COPY_CODE": "copy_code", "QUICK_REPLY": "quick_reply"}
SYNTAX = "template-NAME+LANG+value1|value2 (header=URL or header=text, buttonN=value for the rest)"


_LOOKS_LIKE = re.compile(r"\s*template[-+]\S", re.I)


def looks_like(text: str) -> bool:
    """An operator's text meant as a template command (then never sent as free text)."""
    return _LOOKS_LIKE.match(text) is not None


@dataclass(frozen=True)
class Command:
    name: str
    language: str
    body: tuple[str, ...] = ()
    header: str | None = None
    buttons: Mapping[int, str] = field(default_factory=dict)


class CommandError(ValueError):
    """The command as typed cannot be read (before any template is looked at)."""


def parse(text: str, *, prefixed: bool = True) -> Command | None:
    """The command in `text`, None when `text` is not one (free text); CommandError when it
    starts like one but a value cannot be read."""
    match = (_PREFIXED if prefixed else _BARE).fullmatch(text)
    if match is None:
        return None
    rest = match.group("rest")
    body: list[str] = []
    header: str | None = None
    buttons: dict[int, str] = {}
    for position, raw in enumerate(rest.split("|") if rest and rest.strip() else [], start=1):
        value = raw.strip()
        labelled = _LABEL.fullmatch(value)
        if labelled is not None:
            value = labelled.group("value").strip()
            if not value:
                raise CommandError(f"{labelled.group('label')}= has no value")
            if labelled.group("index") is None:
                if header is not None:
                    raise CommandError("header= is given twice")
                header = value
            else:
                index = int(labelled.group("index"))
                if index in buttons:
                    raise CommandError(f"button{index}= is given twice")
                buttons[index] = value
            continue
        if not value:
            raise CommandError(f"value {position} is empty (WhatsApp refuses empty values)")
        body.append(value)
    return Command(match.group("name"), match.group("lang"), tuple(body), header, buttons)


# ---------------------------------------------------------------------- the template's needs


@dataclass(frozen=True)
class Template:
    """A synchronised template as the command checks it (templates.py builds it from the row)."""

    name: str
    language: str
    status: str
    components: Sequence[Mapping[str, Any]] = ()

    def _component(self, kind: str) -> Mapping[str, Any] | None:
        return next((c for c in self.components if str(c.get("type") or "").upper() == kind), None)

    @property
    def header(self) -> Mapping[str, Any] | None:
        return self._component("HEADER")

    @property
    def body_text(self) -> str:
        body = self._component("BODY")
        return str(body.get("text") or "") if body else ""

    @property
    def body_names(self) -> list[str]:
        return _placeholders(self.body_text)

    @property
    def header_needs(self) -> str | None:
        """'text' (a TEXT header with a variable), 'image'/'video'/'document', or None."""
        header = self.header
        if header is None:
            return None
        fmt = str(header.get("format") or "TEXT").upper()
        if fmt in MEDIA_HEADERS:
            return MEDIA_HEADERS[fmt]
        if fmt == "TEXT" and _placeholders(str(header.get("text") or "")):
            return "text"
        return None

    @property
    def buttons(self) -> list[Mapping[str, Any]]:
        block = self._component("BUTTONS")
        raw = block.get("buttons") if block else None
        return [b for b in raw if isinstance(b, Mapping)] if isinstance(raw, list) else []

    def button_needs(self) -> dict[int, str]:
        """Buttons that must get a parameter: index -> 'url' | 'copy_code'."""
        needs = {}
        for index, button in enumerate(self.buttons):
            kind = str(button.get("type") or "").upper()
            if kind == "URL" and _placeholders(str(button.get("url") or "")):
                needs[index] = "url"
            elif kind == "COPY_CODE":
                needs[index] = "copy_code"
        return needs

    def describe(self) -> str:
        """`name (lang, N values[, header ...])` for the operator's list of what would fit."""
        parts = [self.language, f"{len(self.body_names)} value{'s' if len(self.body_names) != 1 else ''}"]
        if self.header_needs:
            parts.append(f"header={self.header_needs}")
        parts += [f"button{i}=" for i in sorted(self.button_needs())]
        return f"{self.name} ({', '.join(parts)})"


def _placeholders(text: str) -> list[str]:
    seen: list[str] = []
    for name in _PLACEHOLDER.findall(text):
        if name not in seen:
            seen.append(name)
    return seen


# ---------------------------------------------------------------------- checking and building


@dataclass(frozen=True)
class Checked:
    """A command that will go: the Graph `template` object and what the customer will read."""

    template: dict[str, Any]
    rendered: str


class Refusal(ValueError):
    """The command does not fit the synchronised templates: the operator is told why and what fits."""


def check(command: Command, known: Sequence[Template]) -> Checked:
    """Fit the command to the synchronised templates of the number's account, or say why not."""
    approved = [t for t in known if t.status.upper() == "APPROVED"]
    same_name = [t for t in known if t.name == command.name]
    if not same_name:
        raise Refusal(f"there is no template named {command.name}" + _fits(approved))
    template = next((t for t in same_name if t.language == command.language), None)
    if template is None:
        languages = ", ".join(sorted(t.language for t in same_name))
        raise Refusal(
            f"template {command.name} has no language {command.language} (it has: {languages})"
            + _fits([t for t in same_name if t.status.upper() == "APPROVED"])
        )
    if template.status.upper() != "APPROVED":
        raise Refusal(
            f"template {command.name} ({command.language}) is {template.status.upper()}, not APPROVED"
            + _fits([t for t in approved if t.name != command.name or t.language != command.language])
        )
    names = template.body_names
    problems = []
    if len(command.body) != len(names):
        problems.append(
            f"it needs {len(names)} value{'s' if len(names) != 1 else ''}, the command gives {len(command.body)}"
        )
    needs = template.header_needs
    if needs and command.header is None:
        problems.append(f"its header needs header={'URL' if needs != 'text' else 'text'}")
    if not needs and command.header is not None:
        problems.append("it has no header that takes a value (leave header= out)")
    if needs and needs != "text" and command.header is not None and not _is_url(command.header):
        problems.append(f"header= must be an http(s) link to the {needs}")
    button_needs = template.button_needs()
    for index in sorted(set(button_needs) - set(command.buttons)):
        problems.append(f"button{index}= is required ({button_needs[index].replace('_', ' ')} button)")
    for index in sorted(command.buttons):
        if index >= len(template.buttons):
            problems.append(f"it has no button {index}")
    if problems:
        raise Refusal(f"template {command.name} ({command.language}): " + "; ".join(problems) + _fits([template]))
    return Checked(_graph_template(command, template), render(command, template))


def _fits(templates: Sequence[Template], limit: int = 15) -> str:
    if not templates:
        return ". No approved template is available for this number"
    listed = sorted(templates, key=lambda t: (t.name, t.language))
    more = f", and {len(listed) - limit} more" if len(listed) > limit else ""
    return ". Templates that fit: " + "; ".join(t.describe() for t in listed[:limit]) + more


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _text_parameters(names: Sequence[str], values: Sequence[str]) -> list[dict[str, Any]]:
    named = any(not n.isdigit() for n in names)
    out = []
    for name, value in zip(names, values, strict=True):
        parameter: dict[str, Any] = {"type": "text", "text": value}
        if named:
            parameter["parameter_name"] = name
        out.append(parameter)
    return out


def _graph_template(command: Command, template: Template) -> dict[str, Any]:
    components: list[dict[str, Any]] = []
    needs = template.header_needs
    if needs and command.header is not None:
        if needs == "text":
            header_names = _placeholders(str((template.header or {}).get("text") or ""))
            parameters = _text_parameters(header_names[:1], [command.header])
        else:
            parameters = [{"type": needs, needs: {"link": command.header}}]
        components.append({"type": "header", "parameters": parameters})
    if command.body:
        components.append({"type": "body", "parameters": _text_parameters(template.body_names, command.body)})
    for index in sorted(command.buttons):
        kind = str(template.buttons[index].get("type") or "").upper()
        sub_type = _BUTTON_PARAMETER.get(kind, kind.lower())
        value = command.buttons[index]
        if sub_type == "copy_code":
            parameter: dict[str, Any] = {"type": "coupon_code", "coupon_code": value}
        elif sub_type == "quick_reply":
            parameter = {"type": "payload", "payload": value}
        else:
            parameter = {"type": "text", "text": value}
        components.append({"type": "button", "sub_type": sub_type, "index": str(index), "parameters": [parameter]})
    out: dict[str, Any] = {"name": template.name, "language": {"code": template.language}}
    if components:
        out["components"] = components
    return out


def _fill(text: str, names: Sequence[str], values: Sequence[str]) -> str:
    table = dict(zip(names, values, strict=False))
    return _PLACEHOLDER.sub(lambda m: table.get(m.group(1), m.group(0)), text)


def render(command: Command, template: Template) -> str:
    """The template as the customer will read it, values filled in (for the operator's chat)."""
    lines = []
    header = template.header
    if header is not None:
        fmt = str(header.get("format") or "TEXT").upper()
        if fmt == "TEXT":
            text = str(header.get("text") or "")
            lines.append(_fill(text, _placeholders(text), [command.header or ""]))
        elif fmt in MEDIA_HEADERS:
            lines.append(f"[{MEDIA_HEADERS[fmt]}: {command.header or ''}]")
    lines.append(_fill(template.body_text, template.body_names, command.body))
    footer = template._component("FOOTER")
    if footer and footer.get("text"):
        lines.append(str(footer["text"]))
    for index, button in enumerate(template.buttons):
        label = str(button.get("text") or button.get("type") or "button")
        url = str(button.get("url") or "")
        if url and index in command.buttons:
            url = _fill(url, _placeholders(url), [command.buttons[index]])
        lines.append(f"[{label}{': ' + url if url else ''}]")
    return "\n".join(line for line in lines if line)
