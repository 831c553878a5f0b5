"""Operators' BB-code turned into WhatsApp formatting (pure)."""

from __future__ import annotations

import pytest

from thoth_pbx.features.messaging.bbcode import to_whatsapp


@pytest.mark.parametrize(
    ("bbcode", "whatsapp"),
    [
        ("[b]Anna:[/b] [br]Hello!", "*Anna:* \nHello!"),  # the operator signature Bitrix prepends
        ("[i]soon[/i], [s]never[/s], [u]underlined[/u]", "_soon_, ~never~, underlined"),
        ("[url=https://example.com/a?b=1]our shop[/url]", "our shop (https://example.com/a?b=1)"),
        ("[url]https://example.com[/url]", "https://example.com"),
        ("[url=https://example.com]https://example.com[/url]", "https://example.com"),
        ("[user=5]Anna Admin[/user] will call you", "Anna Admin will call you"),
        ("[color=#ff0000]red[/color] [size=20]big[/size] [icon=x]", "red big"),
        ("[code]a [b]not bold[/b] b[/code]", "```a [b]not bold[/b] b```"),
        ("[quote]line one[br]line two[/quote]thanks", "> line one\n> line two\nthanks"),
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("no tags at all", "no tags at all"),
        ("[unknown]kept[/unknown] text", "kept text"),
        ("[B]upper[/B]", "*upper*"),
    ],
)
def test_bbcode_to_whatsapp(bbcode: str, whatsapp: str) -> None:
    assert to_whatsapp(bbcode) == whatsapp
