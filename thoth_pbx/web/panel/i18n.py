"""English and Russian (or any language with a catalog): gettext message catalogs.

The `.po` files under `locale/<lang>/LC_MESSAGES/` are the source and the only thing in git;
they are compiled in memory at start (Babel's reader and writer), so a fresh checkout, a wheel
and CI all run the same catalogs without a build step. Another language is one more `.po`
file (`pybabel init -l xx`, see docs/panel.md), not a code change. The admin's pick is a
cookie; without one the browser's Accept-Language decides.
"""

from __future__ import annotations

import gettext
import io
from pathlib import Path

from aiohttp import web
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT = "en"
LANG_COOKIE = "thoth_lang"
# how each language calls itself, for the picker
NATIVE_NAMES = {"en": "English", "ru": "Русский"}


def load_catalogs(locale_dir: Path = LOCALE_DIR) -> dict[str, gettext.NullTranslations]:
    catalogs: dict[str, gettext.NullTranslations] = {DEFAULT: gettext.NullTranslations()}
    for po in sorted(locale_dir.glob("*/LC_MESSAGES/messages.po")):
        code = po.parent.parent.name
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=code)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
        compiled.seek(0)
        catalogs[code] = gettext.GNUTranslations(compiled)
    return catalogs


def accepted(header: str) -> list[str]:
    """Language codes of an Accept-Language header, best first (`ru-RU;q=0.9` -> `ru`)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, index, tag.split("-")[0].lower()))
    return [code for _, _, code in sorted(ranked)]


def pick(request: web.Request, available: tuple[str, ...]) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in available:
        return chosen
    for code in accepted(request.headers.get("Accept-Language", "")):
        if code in available:
            return code
    return DEFAULT
