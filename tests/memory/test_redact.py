"""`mask_sensitive`: secrets, e-mails, cards and phone numbers masked; ordinary text kept."""

import pytest

from core.redact import CARD, EMAIL, PHONE, SECRET, luhn_ok, mask_sensitive


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("use sk-proj-abcdefghijklmnopqrstuvwx1234 here", f"use {SECRET} here"),
        ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz012345", SECRET),
        ("export OPENAI_API_KEY=sk-abc123def456ghi789jkl012", f"export OPENAI_API_KEY={SECRET}"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", SECRET),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", SECRET),
        ("id AKIAIOSFODNN7EXAMPLE.", f"id {SECRET}."),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            f"aws_secret_access_key = {SECRET}",
        ),
        ("xoxb-1234567890-abcdefghij", SECRET),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", SECRET),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", SECRET),
        ("colony_sk_Zm9vYmFyYmF6cXV4MTIzNDU2", SECRET),
        ("Authorization: Bearer abcdef1234567890abcdef", f"Authorization: Bearer {SECRET}"),
        ('{"token": "a1b2c3d4e5f6g7h8"}', f'{{"token": "{SECRET}"}}'),
        ("password: hunter2", f"password: {SECRET}"),
        ("client_secret='Zx9-vb8_Qw7'", f"client_secret='{SECRET}'"),
        (
            "key=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            f"key={SECRET}",
        ),
        (
            "postgres://colony:s3cretpw@db.example.com:5432/colony",
            f"postgres://colony:{SECRET}@db.example.com:5432/colony",
        ),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            SECRET,
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY----- ok",
            f"{SECRET} ok",
        ),
        ("mail alice.smith+tag@example.co.uk now", f"mail {EMAIL} now"),
        ("Bob <bob@corp.io>", f"Bob <{EMAIL}>"),
        ("card 4111 1111 1111 1111 ok", f"card {CARD} ok"),
        ("card 4111-1111-1111-1111", f"card {CARD}"),
        ("amex 378282246310005 and 3782 822463 10005", f"amex {CARD} and {CARD}"),
        ("call +44 20 7946 0958 today", f"call {PHONE} today"),
        ("call (415) 555-2671 or 415.555.2671", f"call {PHONE} or {PHONE}"),
    ],
)
def test_sensitive_values_are_masked(text: str, expected: str) -> None:
    assert mask_sensitive(text) == expected
    assert mask_sensitive(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "What is 17 * 23? 17 * 23 = 391",
        "17 +23 -5 = 35 and 2 +3 4 5",
        "token: the next one",  # prose, not a token
        "primary key=user_id",
        "the api key is stored in the vault",
        "order 123456789 costs 42.50",
        "4111 1111 1111 1112",  # fails the Luhn check
        "timestamp 1700000000000, build 20240115123456",
        "values 1 2 3 4 5 6 7 8 9 10 11 12 13",
        "released 2024-01-15, version 1.2.3, ip 192.168.1.10",
        "see https://example.com/path?x=1 and git@github.com:org/repo.git",
        "sk-learn is a library; ask-me-anything",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert mask_sensitive(text) == text


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")
