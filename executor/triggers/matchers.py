"""Label matchers as Alertmanager writes them: ``name = value``, ``!=``, ``=~``, ``!~``.

Routes are read by people who also write Alertmanager routes, so the syntax
and the meaning are Alertmanager's: a label that is absent matches as the
empty string, and a regular expression must match the whole value (it is
anchored at both ends). Values may be bare words or double-quoted strings
with ``\\"``, ``\\\\`` and ``\\n`` escapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["MatchOp", "Matcher", "MatcherError", "parse_matcher"]

_MATCHER = re.compile(
    r"""^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*$""",
    re.DOTALL,
)
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n"}
MAX_REGEX_LENGTH = 1024
"""Long enough for any sensible alternation; short enough that matching stays cheap."""


class MatcherError(ValueError):
    """A matcher that cannot be parsed; the message says what to write instead."""


class MatchOp(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True)
class Matcher:
    """One condition on one label of an alert."""

    name: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = str(labels.get(self.name, ""))
        if self.op is MatchOp.EQUAL:
            return actual == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None
        return found if self.op is MatchOp.REGEX else not found

    def __str__(self) -> str:
        quoted = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op.value}"{quoted}"'


def _unquote(text: str) -> str:
    """The value of a matcher: a bare word, or a double-quoted string with escapes."""
    if not text.startswith('"'):
        if text[:1] in ("=", "~"):
            raise MatcherError(
                f"the value {text!r} starts with {text[0]!r}: the operators are =, !=, =~ and !~"
            )
        if '"' in text:
            raise MatcherError(f"unbalanced quote in {text!r}: quote the whole value")
        return text
    if len(text) < 2 or not text.endswith('"'):
        raise MatcherError(f"the value {text!r} opens a quote it does not close")
    out: list[str] = []
    body = text[1:-1]
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 >= len(body) or body[index + 1] not in _ESCAPES:
                raise MatcherError(
                    f'unknown escape in {text!r}: only \\", \\\\ and \\n are allowed'
                )
            out.append(_ESCAPES[body[index + 1]])
            index += 2
            continue
        if char == '"':
            raise MatcherError(f'an unescaped quote inside {text!r}: write \\" for a quote')
        out.append(char)
        index += 1
    return "".join(out)


def parse_matcher(text: str) -> Matcher:
    """``'alertname = "DemoappDown"'`` -> Matcher; raises MatcherError saying what is wrong."""
    if not isinstance(text, str):
        raise MatcherError(f"a matcher is a string such as 'alertname = DemoappDown', not {text!r}")
    found = _MATCHER.match(text)
    if not found:
        raise MatcherError(
            f"{text!r} is not a matcher: write LABEL OP VALUE with OP one of =, !=, =~, !~ "
            "(e.g. 'severity =~ \"critical|page\"')"
        )
    op = MatchOp(found["op"])
    value = _unquote(found["value"])
    regex = None
    if op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
        if len(value) > MAX_REGEX_LENGTH:
            raise MatcherError(
                f"the regular expression of {found['name']!r} is longer than "
                f"{MAX_REGEX_LENGTH} characters"
            )
        try:
            regex = re.compile(value)
        except re.error as exc:
            raise MatcherError(f"invalid regular expression {value!r}: {exc}") from None
    return Matcher(found["name"], op, value, regex)
