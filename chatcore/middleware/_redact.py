"""What the logging middleware removes from text before it is written anywhere.

The runtime does not import plugin packages, so this is chatcore's own pattern
set, not any processor's detector. It is deliberately greedy: a log line that
loses a harmless number costs nothing, a leaked key costs a lot.

Before it, the logging middleware hands message text to the plugins'
``BEFORE_SHARE`` hooks (a PII redactor puts its placeholders in); then, in this
order:

1. secret values from the environment (``OPENAI_API_KEY`` and any variable
   whose name ends in key, token, secret, password …), replaced by ``<ENV:NAME>``;
2. patterns: API keys and long random tokens, e-mail addresses, payment cards
   (Luhn-checked), IBANs (mod-97-checked), IP addresses and phone numbers.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Redactor", "env_secrets"]

MIN_SECRET_CHARS = 8
"""Shorter environment values are not treated as secrets (they would match everywhere)."""
TOKEN_ENTROPY_BITS = 3.5
"""Bits per character above which a long mixed token counts as a secret."""

_SECRET_NAME_RE = re.compile(
    r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|AUTH|AUTHORIZATION|CREDENTIALS?|PAT|DSN)$"
)
_WORDS = re.compile(r"[^\s\"'<>(){}\[\],;]+")

_KEY_RE = re.compile(
    r"(?<![\w-])(?:sk-ant-|sk-proj-|sk-|ghp_|gho_|ghs_|ghu_|github_pat_|glpat-|xox[abpors]-"
    r"|AKIA|ASIA|AIza)[A-Za-z0-9_\-]{10,}"
)
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{12,}")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_CARD_RE = re.compile(r"(?<!\d)\d(?:[ \-]?\d){12,18}(?!\d)")
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_IPV4_RE = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6_RE = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){1,4}(?!\w)"
)


def env_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Secret-looking environment variables: ``{value: name}``, longest value first."""
    env = os.environ if environ is None else environ
    found = {
        value: name
        for name, value in env.items()
        if len(value) >= MIN_SECRET_CHARS and _SECRET_NAME_RE.search(name.upper())
    }
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _random_token(word: str) -> bool:
    if len(word) < 24:
        return False
    classes = sum(
        (
            any(c.isupper() for c in word),
            any(c.islower() for c in word),
            any(c.isdigit() for c in word),
        )
    )
    return classes >= 2 and any(c.isdigit() for c in word) and _entropy(word) >= TOKEN_ENTROPY_BITS


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Redactor:
    """Replaces secrets and personal data in text by labels such as ``<EMAIL>``."""

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self._secrets = dict(secrets) if secrets is not None else env_secrets()

    def secrets_only(self, text: str) -> str:
        """Only the environment's secret values: for fields that are not message text."""
        for value, name in self._secrets.items():
            if value in text:
                text = text.replace(value, f"<ENV:{name}>")
        return text

    def redact(self, text: str) -> str:
        """Everything this module knows how to find."""
        text = self.secrets_only(text)
        text = _KEY_RE.sub("<SECRET>", text)
        text = _BEARER_RE.sub(lambda m: f"{m.group(1)} <SECRET>", text)
        text = _WORDS.sub(lambda m: "<SECRET>" if _random_token(m.group()) else m.group(), text)
        text = _EMAIL_RE.sub("<EMAIL>", text)
        text = _IBAN_RE.sub(lambda m: "<IBAN>" if _iban(m.group()) else m.group(), text)
        text = _CARD_RE.sub(
            lambda m: "<CARD>" if _luhn(re.sub(r"\D", "", m.group())) else m.group(), text
        )
        text = _IPV4_RE.sub(lambda m: "<IP>" if _ip(m.group()) else m.group(), text)
        text = _IPV6_RE.sub(
            lambda m: "<IP>" if m.group().count(":") >= 2 and _ip(m.group()) else m.group(), text
        )
        return _PHONE_RE.sub(
            lambda m: "<PHONE>" if 7 <= sum(c.isdigit() for c in m.group()) <= 15 else m.group(),
            text,
        )
