"""Asterisk configuration file syntax (pure): escape values for it, parse it back.

We render `pjsip_thoth.conf` / `extensions_thoth.conf` from templates and must be sure
that what Asterisk reads is what we meant. This parser follows main/config.c closely
enough for our files (comments with `;`, escaped `\\;`, `;-- --;` block comments,
`[section](template)` headers, `#include`/`#tryinclude` directives, `key=value`,
`key => value` and `key += value`), so it serves three jobs:

* the property tests check that no accepted setting adds a section or an option;
* apply compares the live Asterisk objects with the parsed render (the "intent"),
  even when an admin override template produced the text;
* status parses what is on disk to find drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COMMENT = ";"


class ConfSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


@dataclass
class Option:
    key: str
    value: str
    line: int
    object_style: bool = False  # written with `=>`


@dataclass
class Section:
    name: str
    line: int
    template: bool = False  # `[name](!)`
    inherits: tuple[str, ...] = ()
    options: list[Option] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        for option in self.options:
            if option.key == key:
                return option.value
        return None

    def values(self, key: str) -> list[str]:
        return [o.value for o in self.options if o.key == key]

    @property
    def type(self) -> str | None:
        return self.get("type")


@dataclass
class Directive:
    name: str  # include | tryinclude | exec
    argument: str
    line: int


@dataclass
class ConfFile:
    sections: list[Section]
    directives: list[Directive]

    def find(self, name: str, type_: str | None = None) -> Section | None:
        for section in self.sections:
            if section.name == name and (type_ is None or section.type == type_):
                return section
        return None


def escape_value(value: str) -> str:
    """Make `value` read back unchanged by Asterisk after `key=`.

    `;` starts a comment unless written `\\;` (Asterisk removes the backslash); a value
    starting with `>` would be taken as part of `=>`, so it gets a leading space, which
    Asterisk strips. Line breaks cannot be represented at all: callers reject them.
    """
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError("a configuration value cannot contain a line break or NUL")
    value = value.replace(COMMENT, "\\" + COMMENT)
    if value.startswith(">"):
        value = " " + value
    return value


def _strip_comments(lines: list[str]) -> list[tuple[int, str]]:
    """Remove comments like config.c; returns (line number, remaining text)."""
    out: list[tuple[int, str]] = []
    depth = 0
    for lineno, raw in enumerate(lines, start=1):
        buf = raw
        kept = ""  # text outside block comments, with escapes resolved
        i = 0
        while True:
            j = buf.find(COMMENT, i)
            if j < 0:
                if depth == 0:
                    kept += buf[i:]
                break
            if j > 0 and buf[j - 1] == "\\":
                # escaped: drop the backslash, keep the semicolon
                if depth == 0:
                    kept += buf[i : j - 1] + COMMENT
                i = j + 1
                continue
            if buf[j + 1 : j + 3] == "--" and buf[j + 3 : j + 4] != "-":
                if depth == 0:
                    kept += buf[i:j]
                depth += 1
                i = j + 3
                continue
            if j >= 2 and buf[j - 2 : j] == "--" and depth > 0:
                depth -= 1
                i = j + 1
                continue
            if depth == 0:
                kept += buf[i:j]
                i = len(buf)
                break
            i = j + 1
        out.append((lineno, kept))
    return out


def parse(text: str) -> ConfFile:
    """Parse Asterisk config text; raise ConfSyntaxError where Asterisk would complain."""
    sections: list[Section] = []
    directives: list[Directive] = []
    current: Section | None = None
    for lineno, line in _strip_comments(text.split("\n")):
        line = line.strip(" \t\r\v\f")
        if not line:
            continue
        if line.startswith("["):
            end = line.find("]")
            if end < 0:
                raise ConfSyntaxError(lineno, "section header without closing ']'")
            name = line[1:end]
            rest = line[end + 1 :].strip()
            template, inherits = False, tuple[str, ...]()
            if rest:
                if not (rest.startswith("(") and rest.endswith(")")):
                    raise ConfSyntaxError(lineno, f"unexpected text after section [{name}]: {rest!r}")
                parts = [p.strip() for p in rest[1:-1].split(",") if p.strip()]
                template = "!" in parts
                inherits = tuple(p for p in parts if p != "!")
            current = Section(name, lineno, template, inherits)
            sections.append(current)
            continue
        if line.startswith("#"):
            word, _, arg = line[1:].partition(" ")
            word = word.strip().lower()
            if word not in ("include", "tryinclude", "exec", "tryexec"):
                raise ConfSyntaxError(lineno, f"unknown directive #{word}")
            directives.append(Directive(word, arg.strip().strip('"<>'), lineno))
            continue
        eq = line.find("=")
        if eq < 0:
            raise ConfSyntaxError(lineno, f"no '=' in {line!r}")
        if current is None:
            raise ConfSyntaxError(lineno, "option outside of any [section]")
        key, value = line[:eq], line[eq + 1 :]
        append = key.endswith("+")
        if append:
            key = key[:-1]
        object_style = value.startswith(">")
        if object_style:
            value = value[1:]
        key, value = key.strip(), value.strip()
        if not key:
            raise ConfSyntaxError(lineno, "option without a name")
        if append:
            for option in reversed(current.options):
                if option.key == key:
                    option.value += value
                    break
            else:
                current.options.append(Option(key, value, lineno, object_style))
            continue
        current.options.append(Option(key, value, lineno, object_style))
    return ConfFile(sections, directives)


def mask_secrets(text: str, keys: tuple[str, ...] = ("password", "md5_cred", "oauth_secret")) -> str:
    """The same text with the values of secret options replaced by `***` (for previews, diffs)."""
    out = []
    for line in text.split("\n"):
        stripped = line.lstrip()
        key, sep, _ = stripped.partition("=")
        if sep and key.strip().rstrip("+").strip() in keys:
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}{key.rstrip()}=***")
        else:
            out.append(line)
    return "\n".join(out)
