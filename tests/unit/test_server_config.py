"""The server config file, tokens and permissions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from executor.config import Identity
from executor.errors import UsageError
from executor.server.auth import Forbidden, TokenBook, Unauthenticated
from executor.server.config import load_server_config

TOKEN = "a-long-enough-token-1234"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    return path


def test_a_full_config(tmp_path: Path) -> None:
    (tmp_path / "am.token").write_text(TOKEN + "\n")
    path = write(
        tmp_path,
        f"""\
listen: {{host: 127.0.0.1, port: 9099}}
routes: routes.yaml
workers: 3
max_queue: 500
max_body: 2MiB
shutdown_grace: 1m
tokens:
  - {{identity: alertmanager, groups: [alertmanager], token_file: am.token}}
  - {{identity: ana, token_sha256: {hashlib.sha256(b"ana-token-0123456789").hexdigest()}}}
  - {{identity: ci, token_env: CI_TOKEN, groups: [operators]}}
permissions:
  run: [operators]
""",
    )
    config = load_server_config(path, env={"CI_TOKEN": "ci-token-0123456789abc"})
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 9099, 3)
    assert config.routes == tmp_path / "routes.yaml"
    assert config.max_body == 2 * 1024 * 1024 and config.shutdown_grace == 60.0
    assert [t.identity for t in config.tokens] == ["alertmanager", "ana", "ci"]
    assert config.permissions["run"] == frozenset({"operators"})
    assert config.permissions["read"] == frozenset({"*"})  # the default stays
    flags = load_server_config(path, env={"CI_TOKEN": "ci-token-0123456789abc"}, port=7000)
    assert flags.port == 7000


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("colour: blue\n", "unknown setting(s) colour"),
        ("tokens:\n  - {identity: a, token: clear-text-token-123}\n", "never written in clear"),
        ("tokens:\n  - {identity: a, token_env: MISSING}\n", "MISSING is not set"),
        ("tokens:\n  - {identity: a, token_file: nope.token}\n", "cannot read token file"),
        ("tokens:\n  - {identity: a, token_sha256: abc}\n", "64 hex digits"),
        ("tokens:\n  - {identity: a, token_env: SHORT}\n", "shorter than 16"),
        ("tokens:\n  - {token_env: X}\n", "needs an identity"),
        ("tokens:\n  - {identity: a}\n", "exactly one of"),
        ("permissions: {launch: [x]}\n", "unknown permission 'launch'"),
        ("workers: 0\n", "workers must be a whole number"),
        ("max_body: lots\n", "max_body must be a size"),
        ("shutdown_grace: soon\n", "shutdown_grace"),
        ("listen: {port: 70000}\n", "port must be 1..65535"),
        ("listen: {port: http}\n", "listen.port must be a number"),
        ("- a\n", "a mapping of settings"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_say_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_server_config(write(tmp_path, text), env={"SHORT": "short"})


def test_the_same_token_twice_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tokens:\n  - {identity: a, token_env: T}\n  - {identity: b, token_env: T}\n",
    )
    with pytest.raises(UsageError, match="given twice"):
        load_server_config(path, env={"T": TOKEN})


def test_tokens_map_to_identities_with_their_groups(tmp_path: Path) -> None:
    path = write(tmp_path, "tokens:\n  - {identity: ana, token_env: T, groups: [extra]}\n")
    config = load_server_config(path, env={"T": TOKEN})
    book = TokenBook(config, {"ana": Identity("ana", frozenset({"oncall"}))})
    who = book.authenticate(f"Bearer {TOKEN}")
    assert who.name == "ana" and who.groups == {"oncall", "extra"}
    assert book.authenticate(f"bearer   {TOKEN}  ").name == "ana"
    for header in (None, "", "Bearer", f"Basic {TOKEN}", "Bearer wrong-token-000000000"):
        with pytest.raises(Unauthenticated):
            book.authenticate(header)
    book.authorize(who, "read")  # "*" by default
    with pytest.raises(Forbidden, match="ana may not run"):
        book.authorize(who, "run")  # nobody by default
