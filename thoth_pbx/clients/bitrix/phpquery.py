"""PHP-style query strings, the wire format Bitrix24 speaks besides JSON (pure).

Bitrix posts events form-encoded with bracketed keys (`data[MESSAGES][0][im][chat_id]=5`),
and every `batch` sub-command is a `method?query` string built the way PHP's
`http_build_query` builds it. `encode` writes that format, `decode` reads it back into
nested dicts; lists come back as lists when their keys are exactly 0..n-1, as PHP's
`json_encode` would show them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote_plus

__all__ = ["encode", "decode", "decode_pairs", "parse_pairs", "FormLimit"]


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


class FormLimit(ValueError):
    """A body beyond what any Bitrix24 event needs; the message says which limit."""


MAX_FIELDS = 2000  # a message event with files has a few hundred
MAX_DEPTH = 10  # data[MESSAGES][0][message][files][0][name] is 6 deep
MAX_KEY_LENGTH = 512


def parse_pairs(query: str | bytes, *, max_fields: int = MAX_FIELDS) -> list[tuple[str, str]]:
    """The flat `key=value` pairs, bounded: linear in the body's length, at most `max_fields`."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", errors="replace")
    try:
        return parse_qsl(query, keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:
        raise FormLimit(f"has more than {max_fields} fields") from None


def decode(query: str | bytes, *, max_fields: int = MAX_FIELDS, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse `a[b][0]=x&c=1` into `{"a": {"b": ["x"]}, "c": "1"}` (all leaves are strings)."""
    return decode_pairs(parse_pairs(query, max_fields=max_fields), max_depth=max_depth)


def decode_pairs(pairs: list[tuple[str, str]], *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Linear in the number of pairs: `a[]=x` appends via a per-node counter, not a rescan."""
    root: dict[str, Any] = {}
    next_index: dict[int, int] = {}  # id(node) -> the index `[]` takes next
    for raw_key, value in pairs:
        if len(raw_key) > MAX_KEY_LENGTH:
            raise FormLimit(f"has a key longer than {MAX_KEY_LENGTH} characters")
        path = _split_key(raw_key)
        if not path:
            continue
        if len(path) > max_depth:
            raise FormLimit(f"nests keys deeper than {max_depth} levels")
        node: dict[str, Any] = root
        for index, part in enumerate(path):
            last = index == len(path) - 1
            if part == "":  # `a[]=x` appends
                part = str(next_index.get(id(node), 0))
            if _is_index(part):
                next_index[id(node)] = max(next_index.get(id(node), 0), int(part) + 1)
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    result: dict[str, Any] = _listify(root)
    return result


def _is_index(key: str) -> bool:
    return key.isascii() and key.isdigit() and len(key) < 10


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


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {key: _listify(item) for key, item in value.items()}
    if converted and all(_is_index(key) for key in converted):
        indexes = sorted(int(key) for key in converted)
        if indexes == list(range(len(indexes))):
            return [converted[str(i)] for i in indexes]
    return converted
