"""Challenge parsing, scheme choice and Digest responses against the RFCs' published examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.camera.auth import (
    Challenge,
    basic_authorization,
    choose,
    digest_authorization,
    parse_challenges,
)


def digest_response(header: str) -> str:
    params = parse_challenges([header])[0].params
    return params["response"]


def test_rfc2617_example() -> None:
    # RFC 2617 section 3.5: Mufasa / "Circle Of Life" at testrealm@host.com.
    challenge = parse_challenges(
        [
            'Digest realm="testrealm@host.com", qop="auth,auth-int", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
        ]
    )[0]
    header = digest_authorization(
        challenge,
        username="Mufasa",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
    )
    assert digest_response(header) == "6629fae49393a05397450978507c4ef1"
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header and "nc=00000001" in header


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    # RFC 7616 section 3.9.1: Mufasa / "Circle of Life" at http-auth@example.org.
    challenge = parse_challenges(
        [
            f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
            'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
            'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
        ]
    )[0]
    header = digest_authorization(
        challenge,
        username="Mufasa",
        password="Circle of Life",
        method="GET",
        uri="/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert digest_response(header) == expected
    assert f"algorithm={algorithm}" in header


def test_rfc7617_basic_example() -> None:
    # RFC 7617 section 2: Aladdin / "open sesame".
    assert basic_authorization("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="


def test_basic_first_digest_second_picks_digest() -> None:
    offered = parse_challenges(['Basic realm="cam"', 'Digest realm="cam", nonce="n1", qop="auth"'])
    assert [c.scheme for c in offered] == ["basic", "digest"]
    for mode in ("auto", "digest"):
        chosen = choose(offered, mode)
        assert chosen is not None and chosen.scheme == "digest"
    basic = choose(offered, "basic")
    assert basic is not None and basic.scheme == "basic"


def test_several_challenges_in_one_header_and_strength_order() -> None:
    offered = parse_challenges(
        [
            'Negotiate abc==, Basic realm="a", Digest realm="b", nonce="x", algorithm=MD5, '
            'Digest realm="b", nonce="y", algorithm=SHA-256, qop="auth", NTLM'
        ]
    )
    assert [c.scheme for c in offered] == ["negotiate", "basic", "digest", "digest", "ntlm"]
    best = choose(offered, "auto")
    assert best is not None and best.params["nonce"] == "y"


def test_digest_mode_never_falls_back_to_basic() -> None:
    assert choose(parse_challenges(['Basic realm="cam"']), "digest") is None
    assert choose(parse_challenges(['Basic realm="cam"']), "auto") == Challenge("basic", {"realm": "cam"})


@pytest.mark.parametrize(
    "header",
    [
        'Digest realm="r", nonce="n", algorithm=SHA-1024',  # unknown algorithm
        'Digest realm="r", nonce="n", qop="auth-int"',  # auth-int only
        'Digest realm="r"',  # no nonce
        "Bearer",
    ],
)
def test_challenges_we_cannot_answer_are_not_chosen(header: str) -> None:
    assert choose(parse_challenges([header]), "auto") is None


def test_quoted_strings_with_escapes_and_commas() -> None:
    (challenge,) = parse_challenges(['Digest realm="a \\"b\\", c", nonce="n,1"'])
    assert challenge.params == {"realm": 'a "b", c', "nonce": "n,1"}
    header = digest_authorization(challenge, username='u"x', password="p", method="GET", uri="/s?x=1")
    assert 'username="u\\"x"' in header and 'realm="a \\"b\\", c"' in header and 'uri="/s?x=1"' in header


def test_without_qop_the_rfc2069_form_is_used() -> None:
    (challenge,) = parse_challenges(['Digest realm="r", nonce="n"'])
    header = digest_authorization(challenge, username="u", password="p", method="GET", uri="/")
    assert "qop" not in header and "nc=" not in header and "cnonce" not in header


@given(st.lists(st.text(max_size=200), max_size=4))
def test_parser_never_raises_and_stays_bounded(values: list[str]) -> None:
    offered = parse_challenges(values)
    assert len(offered) <= 16 * max(1, len(values))
    choose(offered, "auto")
