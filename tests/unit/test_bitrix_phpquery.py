"""PHP-style query strings: what http_build_query writes and PHP's parser reads back."""

from __future__ import annotations

from urllib.parse import unquote_plus

from hypothesis import given
from hypothesis import strategies as st

from thoth_pbx.clients.bitrix import phpquery


def test_encode_writes_what_http_build_query_writes() -> None:
    # php > echo http_build_query(['a' => ['b' => 1, 'c' => [1, 2]], 'd' => true, 'e' => null, 'f' => false, 'g' => 'x y&z']);
    expected = "a%5Bb%5D=1&a%5Bc%5D%5B0%5D=1&a%5Bc%5D%5B1%5D=2&d=1&f=0&g=x+y%26z"
    assert phpquery.encode({"a": {"b": 1, "c": [1, 2]}, "d": True, "e": None, "f": False, "g": "x y&z"}) == expected


def test_decode_reads_a_bitrix_event_form() -> None:
    form = (
        "event=ONIMCONNECTORMESSAGEADD&data%5BCONNECTOR%5D=thoth_waba&data%5BLINE%5D=7"
        "&data[MESSAGES][0][im][chat_id]=1767&data[MESSAGES][0][message][text]=%5Bb%5DHi%5B%2Fb%5D"
        "&data[MESSAGES][1][im][chat_id]=1768&auth[application_token]=abc&auth[member_id]=m1&empty="
    )
    parsed = phpquery.decode(form)
    assert parsed["event"] == "ONIMCONNECTORMESSAGEADD" and parsed["empty"] == ""
    assert parsed["data"]["LINE"] == "7"
    assert [m["im"]["chat_id"] for m in parsed["data"]["MESSAGES"]] == ["1767", "1768"]
    assert parsed["data"]["MESSAGES"][0]["message"]["text"] == "[b]Hi[/b]"
    assert parsed["auth"] == {"application_token": "abc", "member_id": "m1"}


def test_decode_appends_empty_brackets_and_keeps_sparse_keys_as_a_mapping() -> None:
    assert phpquery.decode("a[]=x&a[]=y") == {"a": ["x", "y"]}
    assert phpquery.decode("a[2]=x&a[5]=y") == {"a": {"2": "x", "5": "y"}}
    assert phpquery.decode(b"USER_ID[0]=1&USER_ID[1]=3") == {"USER_ID": ["1", "3"]}


scalars = st.one_of(st.text(min_size=1, max_size=12), st.integers(-(10**6), 10**6).map(str))
keys = st.text(
    alphabet=st.characters(blacklist_characters="[]&=", blacklist_categories=("Cs", "Cc")), min_size=1, max_size=8
).filter(lambda k: not k.isdigit() and k.strip() == k and "\x00" not in k)
trees = st.recursive(
    scalars,
    lambda children: (
        st.dictionaries(keys, children, min_size=1, max_size=4) | st.lists(children, min_size=1, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(keys, trees, min_size=1, max_size=4))
def test_what_encode_writes_decode_reads_back(params: dict) -> None:  # type: ignore[type-arg]
    assert phpquery.decode(phpquery.encode(params)) == params


def test_keys_are_percent_encoded_like_php() -> None:
    assert unquote_plus(phpquery.encode({"FILTER": {"UF_PHONE_INNER": "101"}})) == "FILTER[UF_PHONE_INNER]=101"
