"""YAML text -> plain data with source positions, refusing what could hurt us.

A runbook is read at 3 a.m. by a tool that must not hang, crash or guess, so
the loader refuses, with the file:line:col a person must look at: oversized
files, bytes that are not UTF-8, YAML syntax errors (reworded: libyaml's
"could not find expected ':'" helps nobody), tabs used as indentation,
duplicate keys (PyYAML silently keeps the last one), alias bombs and recursive
aliases, nesting deep enough to crash the C parser, unsupported tags, several
documents in one file and a top level that is not a mapping.

Speed matters (the catalog validates every runbook it lists), so libyaml
composes the node tree and one Python walk builds both the data and the
position table. Scalars are resolved exactly as ``yaml.safe_load`` does (YAML
1.1: ``yes`` is a boolean, ``1.3.0`` a string), by PyYAML's own constructors.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from executor.errors import Issue, NotFound, ValidationFailed

DEFAULT_MAX_BYTES = 1024 * 1024
"""Largest file accepted; a runbook is a page of YAML, not a data dump."""

DEFAULT_MAX_ALIAS_NODES = 10_000
"""Nodes that aliases may add on top of the file's own (the billion-laughs budget)."""

DEFAULT_MAX_DEPTH = 100
"""Deepest nesting accepted; real runbooks stay under 15 levels."""

_SAFE_COMPOSE_DEPTH = 2000
"""Below this nesting libyaml's recursive composer is known not to overflow the C stack."""

PathKey = str | int
DocPath = tuple[PathKey, ...]

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"
_CONSTRUCTORS = SafeConstructor.yaml_constructors
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "binary", "timestamp")
)
_KIND_WORDS = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
    datetime.date: "a date",
    datetime.datetime: "a date",
}
_TAB_INDENT = re.compile(r"^[ ]*\t")
_NAME_AT = re.compile(r"[&*]([^\s,\[\]{}]+)")


@dataclass(frozen=True, eq=False)
class Document:
    """One parsed YAML file: its bytes' hash, plain data, and where each node sits.

    Positions are 1-based ``(line, column)``. ``position(path)`` gives the
    value's position, ``position(path, key=True)`` the key's (the item itself
    for list entries); a path that does not exist falls back to its nearest
    existing parent, so an issue about a missing key points at its mapping.
    """

    path: str
    text: str
    sha256: str
    data: Any
    values: Mapping[DocPath, tuple[int, int]] = field(repr=False)
    keys: Mapping[DocPath, tuple[int, int]] = field(repr=False)
    block_scalars: frozenset[DocPath] = field(default=frozenset(), repr=False)

    def position(self, path: DocPath, *, key: bool = False) -> tuple[int, int]:
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            found = table.get(probe) or self.values.get(probe)
            if found is not None:
                return found
            probe = probe[:-1]
        return self.values.get((), (1, 1))

    def has(self, path: DocPath) -> bool:
        """True when ``path`` exists in the data (a key or list index that was written)."""
        return tuple(path) in self.values

    def is_block_scalar(self, path: DocPath) -> bool:
        """True for ``|`` and ``>`` scalars, whose text starts on the line after the key."""
        return tuple(path) in self.block_scalars


def load_document(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Document:
    """Read and parse one file; raises ``ValidationFailed`` or ``NotFound``."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise NotFound(
            f"runbook file {name} does not exist", hint="check the path and the file name"
        ) from None
    except OSError as exc:
        raise ValidationFailed(
            [Issue(name, 1, 1, f"cannot read the file: {exc.strerror}", code="unreadable")]
        ) from None
    return parse_document(
        raw, name, max_bytes=max_bytes, max_alias_nodes=max_alias_nodes, max_depth=max_depth
    )


def parse_document(
    source: str | bytes,
    path: str = "<string>",
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_alias_nodes: int = DEFAULT_MAX_ALIAS_NODES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Document:
    """Parse YAML text or bytes into a ``Document``; raises ``ValidationFailed``.

    ``path`` only labels issues. ``sha256`` is of the bytes (UTF-8 for text).
    """
    raw = source.encode("utf-8") if isinstance(source, str) else bytes(source)
    if len(raw) > max_bytes:
        _fail(
            path,
            1,
            1,
            f"the file is larger than the {max_bytes}-byte limit for a runbook; "
            "split it, or move data out of it",
            "too-large",
        )
    text = _decode(raw, path)
    node = _compose(text, path, max_depth)
    if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL and not node.value):
        _fail(
            path,
            1,
            1,
            "the file is empty; a runbook is a mapping that starts with 'apiVersion: runbook/v1'",
            "not-a-mapping",
        )
    if not isinstance(node, MappingNode):
        line, col = _mark(node)
        got = "a list" if isinstance(node, SequenceNode) else f"the scalar {node.value!r}"
        _fail(
            path,
            line,
            col,
            f"the top level of a runbook must be a mapping (key: value), got {got}",
            "not-a-mapping",
        )
    builder = _Builder(path, text, max_alias_nodes, max_depth)
    data = builder.build(node)
    return Document(
        path=path,
        text=text,
        sha256=hashlib.sha256(raw).hexdigest(),
        data=data,
        values=builder.values,
        keys=builder.keys,
        block_scalars=frozenset(builder.blocks),
    )


# --------------------------------------------------------------------------- reading


def _fail(path: str, line: int, column: int, message: str, code: str) -> None:
    raise ValidationFailed([Issue(path, line, column, message, code=code)])


def _mark(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _decode(raw: bytes, path: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        start = raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[start : exc.start].decode("utf-8", errors="replace")) + 1
        _fail(
            path,
            line,
            column,
            f"byte 0x{raw[exc.start]:02x} is not valid UTF-8; save the file as UTF-8",
            "not-utf8",
        )
    return text[1:] if text.startswith("\ufeff") else text


def _nesting_bound(text: str) -> int:
    """An upper bound on nesting depth: every collection needs one of these characters."""
    return sum(text.count(c) for c in ":-[{?")


def _compose(text: str, path: str, max_depth: int) -> Node | None:
    if _nesting_bound(text) > _SAFE_COMPOSE_DEPTH:
        _check_depth(text, path, max_depth)
    try:
        return yaml.compose(text, Loader=yaml.CSafeLoader)
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        _fail(
            path,
            line,
            col,
            f"character U+{exc.character:04X} is not allowed in YAML; remove it, "
            "or write it as an escape inside double quotes",
            "yaml-syntax",
        )
    except yaml.MarkedYAMLError as exc:
        raise ValidationFailed([_syntax_issue(exc, text, path)]) from None
    return None  # unreachable: _fail raises


def _check_depth(text: str, path: str, max_depth: int) -> None:
    """Walk parser events (libyaml's parser is not recursive) before composing deep input."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    mark = event.start_mark
                    _fail(
                        path,
                        mark.line + 1,
                        mark.column + 1,
                        f"nesting is deeper than {max_depth} levels here; "
                        "a runbook never needs this",
                        "too-deep",
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # composing reports the syntax error with its full context


def _line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _tab_issue(text: str, path: str, first: int, last: int) -> Issue | None:
    lines = text.split("\n")
    for number in range(first, min(last, len(lines) - 1) + 1):
        found = _TAB_INDENT.match(lines[number])
        if found:
            return Issue(
                path,
                number + 1,
                found.end(),
                "a tab is used for indentation; YAML indents with spaces only: "
                "replace the tab with spaces",
                code="tab-indentation",
            )
    return None


_REWORDED: tuple[tuple[str, str, bool, str], ...] = (
    # (text in libyaml's problem, text in its context, point at the context mark?, message)
    (
        "cannot start any token",
        "",
        False,
        "a plain value cannot start with {char!r}; put the value in quotes",
    ),
    (
        "mapping values are not allowed",
        "",
        False,
        "unexpected ':' here; a value that contains ': ' must be quoted, "
        "or this line is indented wrongly",
    ),
    (
        "could not find expected ':'",
        "",
        True,
        "this key has no ':' after it; add the ':', or check the indentation of the line",
    ),
    (
        "did not find expected key",
        "",
        False,
        "this line is not indented like the keys of the mapping at line {ctx_line}; "
        "check its indentation",
    ),
    (
        "did not find expected '-' indicator",
        "",
        False,
        "expected a list item ('- ') here, in the list that starts at line {ctx_line}; "
        "check the indentation",
    ),
    (
        "end of stream",
        "quoted scalar",
        True,
        "this quoted string is never closed; add the closing quote",
    ),
    (
        "expected ',' or ']'",
        "",
        False,
        "the list opened with '[' at line {ctx_line} is not closed; add ']' or a ','",
    ),
    (
        "expected ',' or '}'",
        "",
        False,
        "the mapping opened with '{{' at line {ctx_line} is not closed; add '}}' or a ','",
    ),
    (
        "unknown escape character",
        "",
        False,
        "unknown escape sequence in a double-quoted string; use single quotes, "
        "or write '\\\\' for a backslash",
    ),
    (
        "undefined alias",
        "",
        False,
        "alias '*{name}' refers to no anchor '&{name}' defined before it",
    ),
)


def _syntax_issue(exc: yaml.MarkedYAMLError, text: str, path: str) -> Issue:
    """libyaml's error, reworded for the person who has to fix the file."""
    problem, context = exc.problem or "", exc.context or ""
    mark = exc.problem_mark or exc.context_mark
    ctx = exc.context_mark or mark
    if "tab" in problem or "cannot start any token" in problem:
        first = ctx.line if "tab" in problem else mark.line
        tab = _tab_issue(text, path, first, mark.line)
        if tab is not None:
            return tab
    if "single document" in context:
        return Issue(
            path,
            mark.line + 1,
            mark.column + 1,
            "a second YAML document starts here; a runbook file holds exactly one: "
            "remove the '---' and what follows, or move it to its own file",
            code="multiple-documents",
        )
    found = _NAME_AT.match(text, mark.index)
    words = {
        "char": text[mark.index : mark.index + 1],
        "ctx_line": ctx.line + 1,
        "name": found.group(1) if found else "?",
    }
    for needle, in_context, at_context, message in _REWORDED:
        if needle in problem and in_context in context:
            at = ctx if at_context else mark
            return Issue(
                path, at.line + 1, at.column + 1, message.format(**words), code="yaml-syntax"
            )
    where = f" ({context} at line {ctx.line + 1})" if context else ""
    return Issue(
        path,
        mark.line + 1,
        mark.column + 1,
        f"YAML cannot read this: {problem}{where}",
        code="yaml-syntax",
    )


# --------------------------------------------------------------------------- building


class _Builder:
    """One walk of the node tree: plain data, position tables, and every refusal."""

    def __init__(self, path: str, text: str, max_alias_nodes: int, max_depth: int) -> None:
        self.path = path
        self.text = text
        self.max_alias_nodes = max_alias_nodes
        self.max_depth = max_depth
        self.values: dict[DocPath, tuple[int, int]] = {}
        self.keys: dict[DocPath, tuple[int, int]] = {}
        self.blocks: set[DocPath] = set()
        self.walked: set[int] = set()
        self.active: set[int] = set()
        self.alias_nodes = 0
        self.alias_start: tuple[Node, DocPath] = (Node("", "", None, None), ())
        self.constructor = SafeConstructor()

    def build(self, root: Node) -> Any:
        self.values[()] = _mark(root)
        return self.walk(root, (), False)

    def fail(self, node: Node, message: str, code: str) -> None:
        line, col = _mark(node)
        _fail(self.path, line, col, message, code)

    def walk(self, node: Node, path: DocPath, aliased: bool) -> Any:
        ident = id(node)
        if not aliased and ident in self.walked:
            aliased = True
            self.alias_start = (node, path)
        if aliased:
            self.alias_nodes += 1
            if self.alias_nodes > self.max_alias_nodes:
                self.alias_bomb()
        self.walked.add(ident)
        if isinstance(node, ScalarNode):
            if node.style in ("|", ">"):
                self.blocks.add(path)
            return self.scalar(node)
        if len(path) >= self.max_depth:
            self.fail(
                node,
                f"nesting is deeper than {self.max_depth} levels here; a runbook never needs this",
                "too-deep",
            )
        if ident in self.active:
            self.fail(
                node,
                f"anchor {self.anchor_name(node)} contains an alias to itself; "
                "a runbook cannot hold a recursive structure",
                "recursive-alias",
            )
        self.active.add(ident)
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, path, aliased)
            return self.mapping(node, path, aliased)
        finally:
            self.active.discard(ident)

    def alias_bomb(self) -> None:
        anchor, path = self.alias_start
        probe = path
        while probe and probe not in self.keys:
            probe = probe[:-1]
        line, col = self.keys.get(probe, _mark(anchor))
        _fail(
            self.path,
            line,
            col,
            f"aliases expand to more than {self.max_alias_nodes} extra nodes here "
            f"(anchor {self.anchor_name(anchor)}); this looks like an alias bomb: "
            "write the values out, or use fewer aliases",
            "alias-bomb",
        )

    def anchor_name(self, node: Node) -> str:
        found = _NAME_AT.match(self.text, node.start_mark.index)
        return f"'&{found.group(1)}'" if found else f"at line {node.start_mark.line + 1}"

    def scalar(self, node: ScalarNode) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        construct = _CONSTRUCTORS.get(tag) if tag in _SCALAR_TAGS else None
        if construct is None:
            self.unsupported_tag(node)
        try:
            return construct(self.constructor, node)
        except (ConstructorError, ValueError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            self.fail(node, f"cannot read {node.value!r} as {tag}: {problem}", "yaml-syntax")
        return None  # unreachable

    def unsupported_tag(self, node: Node) -> None:
        self.fail(
            node,
            f"unsupported YAML tag '{node.tag}'; runbooks use plain YAML: remove the tag",
            "unsupported-tag",
        )

    def sequence(self, node: SequenceNode, path: DocPath, aliased: bool) -> list[Any]:
        if node.tag != _SEQ:
            self.unsupported_tag(node)
        out: list[Any] = []
        values = self.values
        for index, item in enumerate(node.value):
            child = (*path, index)
            values[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
            out.append(self.walk(item, child, aliased))
        return out

    def mapping(self, node: MappingNode, path: DocPath, aliased: bool) -> dict[Any, Any]:
        if node.tag != _MAP:
            self.unsupported_tag(node)
        merges = [value for key, value in node.value if key.tag == _MERGE]
        merged = self.merge(merges, path) if merges else {}
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.key(key_node)
            if key in first_line:
                self.fail(
                    key_node,
                    f"duplicate key '{key}': it is already set at line {first_line[key]}; "
                    "keep only one",
                    "duplicate-key",
                )
            first_line[key] = key_node.start_mark.line + 1
            child = (*path, key)
            self.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            self.values[child] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            out[key] = self.walk(value_node, child, aliased)
        if merged:
            merged.update(out)
            return merged
        return out

    def merge(self, merges: list[Node], path: DocPath) -> dict[Any, Any]:
        """``<<: *base`` as the safe loader does it: explicit keys win, then earlier merges.

        Merged keys are walked first so that explicit keys' positions overwrite theirs.
        """
        merged: dict[Any, Any] = {}
        for value in merges:
            items = value.value if isinstance(value, SequenceNode) else [value]
            for item in items:
                if not isinstance(item, MappingNode):
                    self.fail(item, "'<<' merges only mappings (e.g. '<<: *defaults')", "bad-merge")
                for key, data in self.walk(item, path, True).items():
                    merged.setdefault(key, data)
        return merged

    def key(self, node: Node) -> Any:
        if isinstance(node, ScalarNode):
            key = self.scalar(node)
            if isinstance(key, str):
                return key
            shown = node.value
            self.fail(
                node,
                f"key {shown!r} is read as {_KIND_WORDS.get(type(key), 'a value')}, not as text; "
                f'quote it ("{shown}") to use it as a key',
                "non-string-key",
            )
        self.fail(node, "a key must be plain text, not a list or a mapping", "non-string-key")
        return None  # unreachable
