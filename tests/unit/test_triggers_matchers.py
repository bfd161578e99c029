"""Label matchers with Alertmanager's syntax and meaning."""

from __future__ import annotations

import pytest

from executor.triggers.matchers import MatcherError, MatchOp, parse_matcher


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ("alertname = DemoappDown", "alertname", MatchOp.EQUAL, "DemoappDown"),
        ("alertname=DemoappDown", "alertname", MatchOp.EQUAL, "DemoappDown"),
        ('severity =~ "critical|page"', "severity", MatchOp.REGEX, "critical|page"),
        ("env != prod", "env", MatchOp.NOT_EQUAL, "prod"),
        ('host !~ "web[0-9]+"', "host", MatchOp.NOT_REGEX, "web[0-9]+"),
        ('msg = "say \\"hi\\"\\n"', "msg", MatchOp.EQUAL, 'say "hi"\n'),
        ('team = ""', "team", MatchOp.EQUAL, ""),
    ],
)
def test_parse(text: str, name: str, op: MatchOp, value: str) -> None:
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)
    assert parse_matcher(str(matcher)) == matcher  # printed form reads back


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("alertname = X", {"alertname": "X"}, True),
        ("alertname = X", {"alertname": "XY"}, False),
        ("team = ''", {}, False),
        ('team = ""', {}, True),  # an absent label is the empty string
        ('team != ""', {}, False),
        ("env != prod", {}, True),
        ('host =~ "web[0-9]"', {"host": "web1"}, True),
        ('host =~ "web[0-9]"', {"host": "web12"}, False),  # anchored: the whole value
        ('host =~ "web[0-9]"', {"host": "xweb1"}, False),
        ('host !~ "web.*"', {"host": "db1"}, True),
        ('host !~ "web.*"', {"host": "web3"}, False),
        ('host =~ ".*"', {}, True),
    ],
)
def test_match(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("alertname", "is not a matcher"),
        ("= X", "is not a matcher"),
        ("alertname == X", "operators are"),
        ("1abc = x", "is not a matcher"),
        ('x = "open', "does not close"),
        ('x = a"b', "unbalanced quote"),
        ('x = "a\\tb"', "unknown escape"),
        ('x = "a"b"', "unescaped quote"),
        ('x =~ "(unclosed"', "invalid regular expression"),
        ("x =~ " + "a" * 2000, "longer than"),
    ],
)
def test_bad_matchers_say_what_to_write(text: str, words: str) -> None:
    with pytest.raises(MatcherError, match=words.replace("(", r"\(")):
        parse_matcher(text)


def test_a_matcher_is_a_string() -> None:
    with pytest.raises(MatcherError, match="is a string"):
        parse_matcher(["alertname", "X"])  # type: ignore[arg-type]
