"""Tests for executor.masking: every encoding of a secret is hidden, fast."""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
import threading
import time
from collections import namedtuple
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor.masking import MASK, MIN_ENCODED_LENGTH, Masker, encodings

SECRET = "hunter2-Sup3r/s3cret+key"


def b64(data: str, *, urlsafe: bool = False, padded: bool = True) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = encode(data.encode()).decode()
    return text if padded else text.rstrip("=")


def leaks_in_base64(masked: str, secret: bytes) -> bool:
    """True if any base64 run left in ``masked`` still decodes to ``secret``."""
    for piece in masked.split(MASK):
        for alphabet in (None, b"-_"):
            for start in range(4):
                run = piece[start:]
                run = run[: len(run) - len(run) % 4]
                try:
                    decoded = base64.b64decode(run, altchars=alphabet)
                except (binascii.Error, ValueError):
                    continue
                if secret in decoded:
                    return True
    return False


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        b64(SECRET),
        b64(SECRET, padded=False),
        b64(SECRET, urlsafe=True),
        b64(SECRET, urlsafe=True, padded=False),
        quote(SECRET, safe=""),
        quote_plus(SECRET, safe=""),
        quote(SECRET),
        re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(SECRET, safe="")),
        SECRET.encode().hex(),
        SECRET.encode().hex().upper(),
        shlex.quote(SECRET + "'"),
    ],
)
def test_each_encoding_is_masked(form: str) -> None:
    masker = Masker([SECRET, SECRET + "'"])
    masked = masker.mask(f"before {form} after")
    assert masked == f"before {MASK} after"


def test_encodings_that_differ_are_all_listed() -> None:
    forms = encodings("pa ss/wörd")
    assert {
        "pa ss/wörd",
        "pa%20ss%2Fw%C3%B6rd",
        "pa+ss%2Fw%C3%B6rd",
        "pa%20ss/w%C3%B6rd",
        "pa%20ss%2fw%c3%b6rd",
        "7061207373",  # prefix check below covers the full hex
        "'pa ss/wörd'",
    } - {"7061207373"} <= forms
    assert "pa ss/wörd".encode().hex() in forms


@pytest.mark.parametrize("prefix", ["", "u", "us", "use", "user:", "Authorization: x"])
def test_base64_inside_a_larger_blob_is_caught(prefix: str) -> None:
    secret = "correct-horse-battery"
    masker = Masker([secret])
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        blob = encode(f"{prefix}{secret}:trailing".encode()).decode()
        masked = masker.mask(f"Basic {blob}")
        assert MASK in masked
        assert not leaks_in_base64(masked, secret.encode())


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(min_size=8, max_size=40).filter(lambda s: len(s.encode()) >= 8),
    before=st.binary(max_size=12),
    after=st.binary(max_size=12),
)
def test_embedded_base64_never_decodes_back_to_the_secret(
    secret: str, before: bytes, after: bytes
) -> None:
    masker = Masker([secret])
    blob = base64.b64encode(before + secret.encode() + after).decode()
    assert not leaks_in_base64(masker.mask(blob), secret.encode())


def test_json_escaped_secret_is_masked() -> None:
    secret = 'quote"and\\slash'
    masker = Masker([secret])
    masked = masker.mask(json.dumps({"password": secret}))
    assert masked == '{"password": "***"}'


def test_secret_inside_a_rendered_command_is_masked() -> None:
    secret = "it's-a-secret"
    masker = Masker([secret])
    command = f"mysql -p{shlex.quote(secret)} -e 'select 1'"
    assert masker.mask(command) == "mysql -p*** -e 'select 1'"
    dquoted = 'echo "it\'s-a-secret"'
    assert masker.mask(dquoted) == 'echo "***"'


# --------------------------------------------------------------------------- matching rules


def test_overlapping_secrets_leave_no_fragment() -> None:
    masker = Masker(["abcdef", "defghi"])
    assert masker.mask("xxabcdefghixx") == "xx***xx"
    assert masker.mask("abcdef defghi") == "*** ***"


def test_longest_secret_wins_over_a_shorter_one_inside_it() -> None:
    masker = Masker(["pass", "password123"])
    assert masker.mask("password123 and pass") == "*** and ***"


def test_adjacent_occurrences_merge() -> None:
    masker = Masker(["tok3n"])
    assert masker.mask("tok3ntok3n!") == "***!"


@pytest.mark.parametrize("secret", ["a.b*c+d?", "(x|y)[z]{2}^$", "back\\slash\\1", "per%cent%s"])
def test_regex_metacharacters_are_literal(secret: str) -> None:
    masker = Masker([secret])
    assert masker.mask(f"<{secret}>") == f"<{MASK}>"
    assert masker.mask("a.b-c+d and xy z") == "a.b-c+d and xy z"


@pytest.mark.parametrize("secret", ["pässwörd", "密码密码", "emoji-🔑-key", "Ωmega"])
def test_unicode_secrets_and_their_byte_encodings(secret: str) -> None:
    masker = Masker([secret])
    data = secret.encode()
    for form in (secret, quote(secret, safe=""), data.hex(), base64.b64encode(data).decode()):
        assert masker.mask(f"[{form}]") == f"[{MASK}]"


def test_short_declared_secrets_are_masked_but_not_their_tiny_encodings() -> None:
    masker = Masker(["ab1"])
    assert masker.mask("x ab1 y") == f"x {MASK} y"
    assert all(len(form) >= MIN_ENCODED_LENGTH for form in encodings("ab1") - {"ab1"})
    # "YWIx" is base64 of "ab1": 4 characters, masked; its 3-char prefix alone is not
    assert masker.mask("YWIx YWI") == f"{MASK} YWI"


def test_empty_secret_is_ignored() -> None:
    masker = Masker([""])
    assert not masker
    assert masker.mask("anything") == "anything"


def test_non_string_secret_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        Masker().add(b"bytes")  # type: ignore[arg-type]


def test_no_secrets_returns_the_same_object() -> None:
    text = "output " * 1000
    assert Masker().mask(text) is text
    assert Masker(["zzzz-not-there"]).mask(text) is text


def test_call_is_mask() -> None:
    masker = Masker([SECRET])
    assert masker(SECRET) == MASK


def test_add_after_use_takes_effect() -> None:
    masker = Masker()
    assert masker.mask("later-secret") == "later-secret"
    masker.add("later-secret")
    assert masker.mask("later-secret") == MASK


# --------------------------------------------------------------------------- mask_data


def test_mask_data_walks_keys_and_values() -> None:
    Pair = namedtuple("Pair", "left right")
    masker = Masker([SECRET])
    data = {
        "env": {"TOKEN": SECRET, SECRET: "as key"},
        "argv": ["--password", SECRET, 3, None],
        "tuple": (SECRET, 1.5),
        "pair": Pair(SECRET, "ok"),
        "b64": b64(SECRET),
        "num": 42,
    }
    assert masker.mask_data(data) == {
        "env": {"TOKEN": MASK, MASK: "as key"},
        "argv": ["--password", MASK, 3, None],
        "tuple": (MASK, 1.5),
        "pair": Pair(MASK, "ok"),
        "b64": MASK,
        "num": 42,
    }
    assert data["env"]["TOKEN"] == SECRET  # the input is not modified


def test_mask_data_without_secrets_is_identity() -> None:
    data = {"a": ["b"]}
    assert Masker().mask_data(data) is data


# --------------------------------------------------------------------------- scale


def test_one_megabyte_of_output_is_masked_quickly() -> None:
    masker = Masker([f"secret-number-{i:04d}-padding" for i in range(20)])
    line = "2024-05-01T12:00:00Z web1 kernel: some ordinary log line with numbers 12345\n"
    text = line * (1_000_000 // len(line))
    text = text[: len(text) // 2] + "secret-number-0007-padding" + text[len(text) // 2 :]
    started = time.perf_counter()
    masked = masker.mask(text)
    elapsed = time.perf_counter() - started
    assert masked.count(MASK) == 1
    assert "secret-number-0007" not in masked
    assert elapsed < 1.0, f"masking 1 MB with 20 secrets took {elapsed:.3f}s"


def test_many_occurrences_in_a_megabyte() -> None:
    masker = Masker(["s3cr3t-t0k3n"])
    text = "token=s3cr3t-t0k3n; " * 50_000
    started = time.perf_counter()
    masked = masker.mask(text)
    assert time.perf_counter() - started < 2.0
    assert masked == "token=***; " * 50_000


def test_concurrent_add_and_mask() -> None:
    masker = Masker(["initial-secret"])
    errors: list[str] = []

    def adder() -> None:
        for i in range(200):
            masker.add(f"added-secret-{i:03d}")

    def reader() -> None:
        for _ in range(200):
            if "initial-secret" in masker.mask("x initial-secret y"):
                errors.append("leaked")

    threads = [threading.Thread(target=adder)] + [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert masker.mask("added-secret-199") == MASK
