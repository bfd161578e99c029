"""Hide secrets in anything the executor prints, stores or audits (DESIGN.md section 2).

A secret leaks in more shapes than its plain text: a command echoes it
base64-encoded in a header, URL-encoded in a query string, hex-dumped, JSON-
or shell-escaped in the rendered command itself. :class:`Masker` knows each
secret's common encodings and replaces all of them with ``***``.

Choices, so nobody has to guess:

* Every declared non-empty secret is masked, however short: over-masking a
  3-character token is cheaper than leaking it. Empty strings are ignored
  (they would match everywhere).
* Derived encodings shorter than :data:`MIN_ENCODED_LENGTH` characters are
  not added: they would blank out random fragments of ordinary output.
* Base64 is also caught *inside* a larger blob (``user:password`` encoded in
  a Basic auth header): for each of the three byte alignments the characters
  that depend only on the secret are masked, when that core is at least
  :data:`MIN_EMBEDDED_LENGTH` characters long.
* Overlapping and adjacent matches are merged into one ``***``, so two secrets
  sharing characters leave no fragment of either visible (this also makes
  the longest form win over a shorter one inside it).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_EMBEDDED_LENGTH", "MIN_ENCODED_LENGTH", "Masker", "encodings"]

MASK = "***"
MIN_ENCODED_LENGTH = 4
MIN_EMBEDDED_LENGTH = 8

_B64_ALPHABETS = (base64.b64encode, base64.urlsafe_b64encode)


def _embedded_base64(data: bytes) -> set[str]:
    """Base64 characters fixed by ``data`` wherever it sits in a larger blob.

    With ``k`` bytes before it, the secret covers bits ``[8k, 8(k+n))``; the
    output characters wholly inside that range do not depend on neighbours.
    """
    cores: set[str] = set()
    for offset in range(3):
        first = -(-8 * offset // 6)  # ceil
        last = (8 * (offset + len(data))) // 6  # exclusive
        for encode in _B64_ALPHABETS:
            encoded = encode(b"\0" * offset + data).decode("ascii")
            core = encoded[first:last]
            if len(core) >= MIN_EMBEDDED_LENGTH:
                cores.add(core)
    return cores


def encodings(secret: str) -> set[str]:
    """The forms of ``secret`` that :class:`Masker` hides, including itself."""
    data = secret.encode("utf-8")
    forms = {secret}
    derived: set[str] = set()
    for encode in _B64_ALPHABETS:
        padded = encode(data).decode("ascii")
        derived |= {padded, padded.rstrip("=")}
    derived |= _embedded_base64(data)
    for url in (quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)):
        derived |= {url, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), url)}
    derived |= {data.hex(), data.hex().upper()}
    derived.add(json.dumps(secret)[1:-1])  # "a\"b" inside JSON output
    derived.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    derived.add(shlex.quote(secret))  # as it appears in a rendered command
    derived.add(re.sub(r'([\\$`"])', r"\\\1", secret))  # inside "..." in a command
    forms |= {form for form in derived if len(form) >= MIN_ENCODED_LENGTH}
    return forms


class Masker:
    """Replaces every known secret, in every known encoding, with ``***``.

    Thread-safe: secrets may be added by the credential provider while other
    threads mask step output. With no secret added, masking returns the text
    unchanged at the cost of one attribute read.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._forms: tuple[str, ...] = ()  # replaced whole, never mutated: safe to read
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Mask ``secret`` (and its encodings) from now on; empty strings are ignored."""
        if not isinstance(secret, str):
            raise TypeError(f"a secret to mask must be a str, not {type(secret).__name__}")
        if not secret:
            return
        with self._lock:
            forms = set(self._forms) | encodings(secret)
            self._forms = tuple(sorted(forms, key=lambda form: (-len(form), form)))

    def __bool__(self) -> bool:
        return bool(self._forms)

    def mask(self, text: str) -> str:
        """``text`` with every occurrence of a secret form replaced by ``***``."""
        forms = self._forms
        if not forms or not text:
            return text
        spans = _merged_spans(forms, text)
        if not spans:
            return text
        out: list[str] = []
        position = 0
        for start, end in spans:
            out.append(text[position:start])
            out.append(MASK)
            position = end
        out.append(text[position:])
        return "".join(out)

    __call__ = mask

    def mask_data(self, value: Any) -> Any:
        """Mask strings anywhere in dicts, lists and tuples (keys too); others as is."""
        if not self._forms:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_data(k): self.mask_data(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.mask_data(item) for item in value]
        if isinstance(value, tuple):
            masked = [self.mask_data(item) for item in value]
            return type(value)(*masked) if hasattr(value, "_fields") else tuple(masked)
        return value


def _merged_spans(forms: Iterable[str], text: str) -> list[tuple[int, int]]:
    """Every occurrence of every form, overlapping and adjacent ones merged.

    One ``str.find`` scan per form: C-speed substring search beats a regex
    alternation of hundreds of literals by an order of magnitude, and taking
    the union of all occurrences leaves no fragment of overlapping secrets.
    """
    found: list[tuple[int, int]] = []
    for form in forms:
        index = text.find(form)
        while index != -1:
            found.append((index, index + len(form)))
            index = text.find(form, index + 1)
    if not found:
        return found
    found.sort()
    merged = [found[0]]
    for start, end in found[1:]:
        last_start, last_end = merged[-1]
        if start <= last_end:
            merged[-1] = (last_start, max(last_end, end))
        else:
            merged.append((start, end))
    return merged
