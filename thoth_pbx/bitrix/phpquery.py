"""PHP-style query strings, the wire format Bitrix24 speaks besides JSON (pure).

Bitrix posts events form-encoded with bracketed keys (`data[MESSAGES][0][im][chat_id]=5`),
and every `batch` sub-command is a `method?query` string built the way PHP's
`http_build_query` builds it. `encode` writes that format, `decode` reads it back into
nested dicts; lists come back as lists when their keys are exactly 0..n-1, as PHP's
`json_encode` would show them.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import parse_qsl, quote_plus

__all__ = ["encode", "decode", "decode_pairs"]


def encode(params: Mapping[str, Any]) -> str:
    """`http_build_query`: nested keys in brackets, True/False as 1/0, None left out."""
    pairs: list[str] = []
    for key, value in params.items():
        _encode_value(str(key), value, pairs)
    return "&".join(pairs)


def _encode_value(key: str, value: Any, out: list[str]) -> None:
    if value is None:
        return  # PHP drops nulls; callers who need an empty value pass ""
    if isinstance(value, Mapping):
        for sub, item in value.items():
            _encode_value(f"{key}[{sub}]", item, out)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _encode_value(f"{key}[{index}]", item, out)
        return
    if isinstance(value, bool):
        text = "1" if value else "0"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    out.append(f"{quote_plus(key)}={quote_plus(text)}")


def decode(query: str | bytes) -> dict[str, Any]:
    """Parse `a[b][0]=x&c=1` into `{"a": {"b": ["x"]}, "c": "1"}` (all leaves are strings)."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", errors="replace")
    return decode_pairs(parse_qsl(query, keep_blank_values=True))


def decode_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        path = _split_key(raw_key)
        if not path:
            continue
        node: dict[str, Any] = root
        for index, part in enumerate(path):
            last = index == len(path) - 1
            if part == "":  # `a[]=x` appends
                part = str(_next_index(node))
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)


def _split_key(key: str) -> list[str]:
    """`a[b][]` -> ["a", "b", ""]; a key without brackets is itself (PHP keeps text after a stray `]`)."""
    open_at = key.find("[")
    if open_at <= 0:
        return [key] if key else []
    parts = [key[:open_at]]
    rest = key[open_at:]
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            break
        parts.append(rest[1:close])
        rest = rest[close + 1 :]
    return parts


def _next_index(node: dict[str, Any]) -> int:
    numeric = [int(k) for k in node if k.isdigit()]
    return max(numeric) + 1 if numeric else 0


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {key: _listify(item) for key, item in value.items()}
    if converted and all(key.isdigit() for key in converted):
        indexes = sorted(int(key) for key in converted)
        if indexes == list(range(len(indexes))):
            return [converted[str(i)] for i in indexes]
    return converted
