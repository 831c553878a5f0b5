"""Bitrix24 chat BB-code -> WhatsApp formatting (pure), for what operators write in Open Lines.

WhatsApp (developers.facebook.com/docs/whatsapp/on-premises/reference/messages#formatting, and
the app's own rules): *bold*, _italic_, ~strike~, ```monospace```, "> " quotes. Bitrix24's chat
BB-code (im's text parser): [b] [i] [u] [s], [url] / [url=...], [br], [quote], [code],
[user=ID]name[/user], [chat=..], [color=..], [size=..], [icon=..]. Underline, colour and size
have no WhatsApp form: their text is kept, the tags dropped. A link becomes "text (url)" unless
the text is the url. Unknown tags are dropped, their text kept: nothing the operator wrote is lost.
"""

from __future__ import annotations

import html
import re

_PAIRS = {"b": "*", "i": "_", "s": "~"}
_TAG = re.compile(r"\[(/?)([a-zA-Z]+)(?:=([^\]]*))?\]")


def to_whatsapp(text: str) -> str:
    out: list[str] = []
    pos = 0
    link_stack: list[tuple[int, str | None]] = []  # (index in out where the link text starts, url)
    code_depth = 0
    for match in _TAG.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        closing, name, arg = match.group(1) == "/", match.group(2).lower(), match.group(3)
        if code_depth and not (name == "code" and closing):
            out.append(match.group(0))  # inside [code] tags are text
            continue
        if name == "br":
            out.append("\n")
        elif name in _PAIRS:
            out.append(_PAIRS[name])
        elif name == "code":
            code_depth += -1 if closing else 1
            out.append("```")
        elif name == "quote":
            out.append("\x00/QUOTE\x00" if closing else "\x00QUOTE\x00")
        elif name == "url":
            if not closing:
                link_stack.append((len(out), arg.strip().strip("\"'") if arg else None))
            elif link_stack:
                start, url = link_stack.pop()
                label = "".join(out[start:]).strip()
                del out[start:]
                target = url or label
                out.append(label if not url or label in ("", url) else f"{label} ({target})")
        # u, color, size, font, user, chat, icon, and anything unknown: the tag goes, its text stays
    out.append(text[pos:])
    joined = "".join(out)
    # a quote's lines get WhatsApp's "> " marker
    parts = joined.split("\x00QUOTE\x00")
    result = parts[0]
    for part in parts[1:]:
        quoted, _, rest = part.partition("\x00/QUOTE\x00")
        result += "\n".join("> " + line for line in quoted.strip("\n").splitlines() or [""]) + "\n" + rest.lstrip("\n")
    result = result.replace("\x00/QUOTE\x00", "")
    return html.unescape(re.sub(r"\n{3,}", "\n\n", result)).strip()


_SIGNATURE = re.compile(r"^\s*\[b\][^\[\]\n]{1,120}:\[/b\]\s*(?:\[br\]|\n)?\s*", re.IGNORECASE)
_DASHES = re.compile(r"^-{20,}$")
_QUOTE_HEADER = re.compile(r"^.{0,120}\[\d{1,2}\.\d{1,2}\.\d{2,4}[^\]]*\]$")


def split_signature(text: str) -> tuple[str, str]:
    """Bitrix24 prepends "[b]Name:[/b] [br]" when the line's signature is on: (signature, rest)."""
    match = _SIGNATURE.match(text)
    return (match.group(0), text[match.end() :]) if match else ("", text)


def split_quote(text: str) -> tuple[str | None, str]:
    """An operator's quote of an earlier message: (the quoted text, what the operator wrote).

    Bitrix24's documented event payload has no reply reference (docs silent), so the quote is
    read from the text: the messenger's block (a line of dashes, "Name [date]", the quoted
    lines, a line of dashes) or a [quote]...[/quote] tag at the start."""
    lines = re.sub(r"\[br\]", "\n", text, flags=re.IGNORECASE).split("\n")
    if lines and _DASHES.match(lines[0].strip()):
        for end in range(1, len(lines)):
            if _DASHES.match(lines[end].strip()):
                body = lines[1:end]
                if body and _QUOTE_HEADER.match(body[0].strip()):
                    body = body[1:]
                return "\n".join(body).strip(), "\n".join(lines[end + 1 :]).strip()
    match = re.match(r"^\s*\[quote\](.*?)\[/quote\]", text, flags=re.IGNORECASE | re.DOTALL)
    if match:
        return to_whatsapp(match.group(1)).strip(), text[match.end() :].strip()
    return None, text
