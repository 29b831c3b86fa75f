"""Masking of secrets and obvious personal data before text is embedded or stored.

`mask_sensitive` replaces what it finds with a placeholder that says what was there:

    [SECRET]    API keys and tokens by their shape (OpenAI/Anthropic `sk-...`, GitHub
                `ghp_...`, AWS `AKIA...`, Slack `xox?-...`, Google `AIza...`, Stripe,
                Colony keys, JWTs, private-key blocks), bearer tokens, the value after a
                secret-sounding label (`api_key=...`, `token: ...`, `password=...`) and
                the password in a URL (`https://user:[SECRET]@host`)
    [EMAIL]     e-mail addresses
    [CARD]      payment card numbers: 13-19 digits, spaces or dashes allowed, that pass
                the Luhn check (so most long numbers are left alone)
    [PHONE]     phone numbers written as phone numbers: `+` and a country code, or
                `(415) 555-2671` / `415-555-2671` / `415.555.2671`; plain digit runs and
                arithmetic (`17 * 23 = 391`) are not phone numbers

It is a filter for the obvious, not a guarantee: a secret with no recognisable shape or
label passes. Masking is idempotent (placeholders match no pattern).
"""

import re
from typing import Final

SECRET: Final = "[SECRET]"
EMAIL: Final = "[EMAIL]"
CARD: Final = "[CARD]"
PHONE: Final = "[PHONE]"

_TOKEN_SHAPES: Final = re.compile(
    r"""
    -----BEGIN[ A-Z]*PRIVATE\ KEY-----[\s\S]*?(?:-----END[ A-Z]*PRIVATE\ KEY-----|\Z)
    | (?<![\w-])(?:
        sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}         # OpenAI, Anthropic
      | colony_sk_[A-Za-z0-9_-]{16,}                                 # our own API keys
      | gh[pousr]_[A-Za-z0-9]{30,}                                   # GitHub tokens
      | github_pat_[A-Za-z0-9_]{30,}
      | (?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}                     # AWS access key ids
      | xox[abposr]-[A-Za-z0-9-]{10,}                                # Slack
      | AIza[0-9A-Za-z_-]{35}                                        # Google API keys
      | (?:sk|pk|rk)_(?:live|test)_[0-9A-Za-z]{16,}                  # Stripe
      | glpat-[0-9A-Za-z_-]{20,}                                     # GitLab
      | hf_[A-Za-z0-9]{30,}                                          # Hugging Face
      | eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,} # JWTs
    )(?![\w-])
    """,
    re.VERBOSE,
)
_BEARER: Final = re.compile(r"(?i)\b(bearer|basic)(\s+)(?!\[SECRET\])[A-Za-z0-9._~+/=-]{8,}")
# A label that names a secret, then `=` or `:` (optionally quoted), then the value.
_LABELLED: Final = re.compile(
    r"""(?ix)
    (\b(?:[a-z0-9]+[_-])*
      (?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?key|private[_-]?key|client[_-]?secret
        |token|auth[_-]?token|access[_-]?token|refresh[_-]?token|password|passwd|pwd|passphrase
        |credentials?|key)
    ["']?\s*[:=]\s*["']?)
    (?!\[SECRET\])([^\s"',;&<>]+)
    """
)
_URL_PASSWORD: Final = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s:/@]+:)(?!\[SECRET\])[^\s/@]+(@)")
_EMAIL: Final = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b"
    r"(?!:[\w~/])"  # git@github.com:org/repo is an address of a repository
)
# Contiguous, in groups of four, or Amex's 4-6-5; issuers' numbers start with 2-6.
_CARD_CANDIDATE: Final = re.compile(
    r"(?<![\w.-])[2-6](?:\d{12,18}|\d{3}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{3}[ -]\d{6}[ -]\d{5})(?!\w|[.-]\d)"
)
_PHONE: Final = re.compile(
    r"""(?x)
    (?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w])        # +44 20 7946 0958
    | (?<![\w(])\(\d{3}\)\ ?\d{3}[ .-]\d{4}(?![\w])               # (415) 555-2671
    | (?<![\w.-])\d{3}([.-])\d{3}\1\d{4}(?![\w.-])                # 415-555-2671, 415.555.2671
    """
)


def luhn_ok(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum (payment cards do)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _labelled_value(match: re.Match[str]) -> str:
    label, value = match[1], match[2]
    name = re.sub(r"[\s\"':=]", "", label).lower()
    if any(word in name for word in ("pass", "pwd", "credential")):
        masked = len(value) >= 4
    elif re.search(r"(?:^|[_-])key$", name) and not re.search(r"(api|secret|access|private)", name):
        # A bare "key" is often not a secret ("primary key=user_id"): only random-looking values.
        masked = _random_looking(value)
    else:
        # "token: the next one" is prose, not a token: keep short or word-like values.
        masked = len(value) >= 8 and not (value.isalpha() and len(value) < 24)
    return label + SECRET if masked else match[0]


def _random_looking(value: str) -> bool:
    return len(value) >= 16 and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match[0])
    if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits):
        return CARD
    return match[0]


def _phone(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match[0])
    return PHONE if 8 <= digits <= 15 else match[0]


def mask_sensitive(text: str) -> str:
    """`text` with secrets, e-mail addresses, card and phone numbers replaced by placeholders.

    See the module docstring for what is recognised. Cheap enough to run on every memory
    (a few regular-expression passes).
    """
    text = _TOKEN_SHAPES.sub(SECRET, text)
    text = _BEARER.sub(lambda m: f"{m[1]}{m[2]}{SECRET}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}{SECRET}{m[2]}", text)
    text = _LABELLED.sub(_labelled_value, text)
    text = _EMAIL.sub(EMAIL, text)
    text = _CARD_CANDIDATE.sub(_card, text)
    return _PHONE.sub(_phone, text)
