"""Pages: one Jinja environment per language (the catalog installed in it), the page chrome's
context, and the headers every panel page carries."""

from __future__ import annotations

import gettext
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from thoth_pbx import __version__
from thoth_pbx.web.panel import i18n
from thoth_pbx.web.panel.auth import SESSION, PanelSession

TEMPLATES = Path(__file__).parent / "templates"
LANG = web.RequestKey("panel_lang", str)

# No inline script or style: everything comes from /panel/static (an offline PBX network
# has no CDN), and a value an attacker slipped into a page cannot run.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Translate = Callable[[str], str]


def N_(message: str) -> str:  # noqa: N802 (gettext's name for "mark for the catalog, translate later")
    """Marks a message for the catalog; it is translated where it is shown (`Pages.flash`)."""
    return message


class Pages:
    def __init__(self, catalogs: dict[str, gettext.NullTranslations] | None = None) -> None:
        self.catalogs = catalogs if catalogs is not None else i18n.load_catalogs()
        self.languages = tuple(sorted(self.catalogs, key=lambda c: (c != i18n.DEFAULT, c)))
        self._envs = {code: self._environment(tr) for code, tr in self.catalogs.items()}

    @staticmethod
    def _environment(translations: gettext.NullTranslations) -> jinja2.Environment:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        return env

    def lang(self, request: web.Request) -> str:
        if LANG not in request:
            request[LANG] = i18n.pick(request, self.languages)
        return request[LANG]

    def translator(self, request: web.Request) -> Translate:
        return self.catalogs[self.lang(request)].gettext

    def flash(self, request: web.Request, message: str, kind: str = "ok", **values: Any) -> None:
        """A message for the next page, in the admin's language (`message` marked with N_)."""
        request[SESSION].flash(self.translator(request)(message).format(**values), kind)

    def render(
        self, request: web.Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200
    ) -> web.Response:
        lang = self.lang(request)
        session: PanelSession | None = request.get(SESSION)
        page = {
            "lang": lang,
            "languages": [(code, i18n.NATIVE_NAMES.get(code, code)) for code in self.languages],
            "session": session,
            "csrf": session.csrf if session else "",
            "flashes": session.take_flashes() if session else [],
            "path": request.path_qs,
            "version": __version__,
            "errors": {},
            "form_error": None,
            **(context or {}),
        }
        body = self._envs[lang].get_template(template).render(page)
        response = web.Response(text=body, content_type="text/html", status=status)
        response.headers.update(SECURITY_HEADERS)
        return response
