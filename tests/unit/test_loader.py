"""The loader: plain data and positions, YAML 1.1 as the safe loader reads it, every refusal."""

from __future__ import annotations

import datetime
import hashlib

import pytest
import yaml

from executor.errors import Issue, NotFound, ValidationFailed
from executor.loader import load_document, parse_document

SAMPLE = """\
apiVersion: runbook/v1
metadata:
  name: disk-pressure
  version: 1.3.0
steps:
  - id: measure
    ssh: {target: node, command: "df -h"}
  - id: clean
    needs: [measure]
    when: |
      inputs.force or
      steps.measure.outputs.percent > 90
"""


def refusal(source: str | bytes, **limits: int) -> Issue:
    """The one issue the loader refuses ``source`` with."""
    with pytest.raises(ValidationFailed) as caught:
        parse_document(source, "rb.yaml", **limits)
    assert len(caught.value.issues) == 1
    return caught.value.issues[0]


def where(issue: Issue) -> tuple[int, int, str, str]:
    return issue.line, issue.column, issue.code, issue.message


# --------------------------------------------------------------------------- data


def test_data_hash_and_text_of_a_valid_document() -> None:
    doc = parse_document(SAMPLE.encode(), "disk.yaml")
    assert doc.path == "disk.yaml"
    assert doc.text == SAMPLE
    assert doc.sha256 == hashlib.sha256(SAMPLE.encode()).hexdigest()
    assert doc.data["steps"][1]["needs"] == ["measure"]
    assert doc.data["steps"][0]["ssh"] == {"target": "node", "command": "df -h"}


def test_text_and_bytes_give_the_same_hash() -> None:
    assert parse_document(SAMPLE).sha256 == parse_document(SAMPLE.encode()).sha256


def test_a_byte_order_mark_is_hashed_but_not_parsed() -> None:
    raw = b"\xef\xbb\xbf" + SAMPLE.encode()
    doc = parse_document(raw)
    assert doc.sha256 == hashlib.sha256(raw).hexdigest()
    assert doc.data["apiVersion"] == "runbook/v1"


@pytest.mark.parametrize(
    "text",
    [
        SAMPLE,
        "a: yes\nb: No\nc: on\nd: 010\ne: 0x1f\nf: 1_000\ng: 1.5e3\nh: .inf\ni: ~\nj: null\n",
        "v: 1.3.0\nw: 1.3\nx: 2024-01-31\ny: 2024-01-31 10:00:00\nz: '123'\n",
        "base: &b {x: 1, y: 2}\nmerged:\n  <<: *b\n  y: 3\n",
        "a: &a {p: 1}\nb: &b {q: 2, p: 9}\nc:\n  <<: [*a, *b]\n  r: 3\n",
        "s: |\n  line one\n  line two\nf: >\n  folded\n  text\n",
        "list: [1, two, 3.0, true, null, {k: v}]\n",
        "b: !!binary aGVsbG8=\ns: !!str 12\n",
    ],
)
def test_data_equals_what_the_safe_loader_builds(text: str) -> None:
    assert parse_document(text).data == yaml.load(text, Loader=yaml.CSafeLoader)


def test_yaml_1_1_scalars_keep_their_types() -> None:
    data = parse_document("a: yes\nv: 1.3.0\nd: 2024-01-31\nn: 010\n").data
    assert data == {"a": True, "v": "1.3.0", "d": datetime.date(2024, 1, 31), "n": 8}


def test_merged_keys_come_first_and_explicit_keys_win() -> None:
    doc = parse_document("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n")
    assert list(doc.data["c"].items()) == [("x", 1), ("y", 3)]
    assert doc.position(("c", "y"), key=True) == (4, 3)
    assert doc.position(("c", "x")) == (1, 14)


# --------------------------------------------------------------------------- positions


def test_positions_of_values_and_keys_are_one_based() -> None:
    doc = parse_document(SAMPLE)
    assert doc.position(()) == (1, 1)
    assert doc.position(("metadata",), key=True) == (2, 1)
    assert doc.position(("metadata", "name")) == (3, 9)
    assert doc.position(("metadata", "name"), key=True) == (3, 3)
    assert doc.position(("steps", 1)) == (8, 5)
    assert doc.position(("steps", 1), key=True) == (8, 5)
    assert doc.position(("steps", 1, "needs"), key=True) == (9, 5)
    assert doc.position(("steps", 1, "needs")) == (9, 12)
    assert doc.position(("steps", 1, "needs", 0)) == (9, 13)
    assert doc.position(("steps", 0, "ssh", "command")) == (7, 34)


def test_a_missing_path_falls_back_to_its_nearest_parent() -> None:
    doc = parse_document(SAMPLE)
    assert doc.position(("steps", 0, "ssh", "credential")) == doc.position(("steps", 0, "ssh"))
    assert doc.position(("steps", 9, "id"), key=True) == doc.position(("steps",), key=True)
    assert doc.position(("nowhere",)) == (1, 1)
    assert not doc.has(("steps", 0, "ssh", "credential"))
    assert doc.has(("steps", 0, "ssh", "command"))


def test_block_scalars_are_marked() -> None:
    doc = parse_document(SAMPLE)
    assert doc.is_block_scalar(("steps", 1, "when"))
    assert not doc.is_block_scalar(("steps", 0, "ssh", "command"))


def test_columns_count_characters_not_bytes() -> None:
    doc = parse_document("tïtle: é\nnext: [ü, x]\n")
    assert doc.position(("tïtle",)) == (1, 8)
    assert doc.position(("next", 1)) == (2, 11)


# --------------------------------------------------------------------------- refusals


def test_a_file_over_the_size_limit_is_refused() -> None:
    assert where(refusal("a: " + "x" * 100, max_bytes=64)) == (
        1,
        1,
        "too-large",
        "the file is larger than the 64-byte limit for a runbook; split it, or move data out of it",
    )


def test_the_default_size_limit_is_one_mebibyte() -> None:
    refused = refusal(b"a: " + b"x" * (1024 * 1024))
    assert refused.code == "too-large"
    assert parse_document(b"a: " + b"x" * (1024 * 1000)).data["a"].startswith("x")


def test_bytes_that_are_not_utf8_are_refused_at_the_first_bad_byte() -> None:
    assert where(refusal(b"a: 1\nb: \xc3\xa9t\xe9\n")) == (
        2,
        6,
        "not-utf8",
        "byte 0xe9 is not valid UTF-8; save the file as UTF-8",
    )


TAB = "a tab is used for indentation; YAML indents with spaces only: replace the tab with spaces"


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [("a:\n\tb: 1\n", 2, 1), ("a:\n  b: 1\n  c:\n  \t d: 2\n", 4, 3)],
)
def test_tabs_used_as_indentation_are_named(text: str, line: int, column: int) -> None:
    assert where(refusal(text)) == (line, column, "tab-indentation", TAB)


def test_a_tab_inside_a_value_is_fine() -> None:
    assert parse_document('a: "x\\ty"\nb: x\ty\n').data == {"a": "x\ty", "b": "x\ty"}


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        (
            "a: b: c\n",
            1,
            5,
            "unexpected ':' here; a value that contains ': ' must be quoted, "
            "or this line is indented wrongly",
        ),
        (
            "a:\n  b: 1\n  c\n  d: 2\n",
            3,
            3,
            "this key has no ':' after it; add the ':', or check the indentation of the line",
        ),
        (
            "a:\n  b: 1\n c: 2\n",
            3,
            2,
            "this line is not indented like the keys of the mapping at line 1; "
            "check its indentation",
        ),
        (
            "a:\n  - 1\n  b: 2\n",
            3,
            3,
            "expected a list item ('- ') here, in the list that starts at line 2; "
            "check the indentation",
        ),
        ('a: "abc\nb: 2\n', 1, 4, "this quoted string is never closed; add the closing quote"),
        (
            "a: [1, 2\nb: 3\n",
            2,
            2,
            "the list opened with '[' at line 1 is not closed; add ']' or a ','",
        ),
        (
            "a: {x: 1\nb: 3\n",
            2,
            2,
            "the mapping opened with '{' at line 1 is not closed; add '}' or a ','",
        ),
        ("a: @x\n", 1, 4, "a plain value cannot start with '@'; put the value in quotes"),
        (
            'a: "\\q"\n',
            1,
            5,
            "unknown escape sequence in a double-quoted string; use single quotes, "
            "or write '\\\\' for a backslash",
        ),
        ("a: *nope\n", 1, 4, "alias '*nope' refers to no anchor '&nope' defined before it"),
        (
            "a: \x07\n",
            1,
            4,
            "character U+0007 is not allowed in YAML; remove it, or write it as an escape "
            "inside double quotes",
        ),
    ],
)
def test_yaml_syntax_errors_are_reworded(text: str, line: int, column: int, message: str) -> None:
    assert where(refusal(text)) == (line, column, "yaml-syntax", message)


def test_an_unusual_syntax_error_still_says_where_and_what() -> None:
    issue = refusal("a: &x 1\nb: &x 2\n")
    assert issue.code == "yaml-syntax"
    assert issue.message.startswith("YAML cannot read this: second occurrence")
    assert (issue.line, issue.column) == (2, 4)


def test_duplicate_keys_name_the_first_line() -> None:
    assert where(refusal("steps:\n  - id: a\n    needs: []\n    log: {}\n    needs: [b]\n")) == (
        5,
        5,
        "duplicate-key",
        "duplicate key 'needs': it is already set at line 3; keep only one",
    )


def test_the_same_key_in_two_mappings_is_not_a_duplicate() -> None:
    assert parse_document("a: {x: 1}\nb: {x: 2}\n").data == {"a": {"x": 1}, "b": {"x": 2}}


BOMB = "".join(
    f"{name}: &{name} [{', '.join([prev] * 10)}]\n"
    for name, prev in zip(
        "abcdefgh", ["lol", "*a", "*b", "*c", "*d", "*e", "*f", "*g"], strict=True
    )
)


def test_an_alias_bomb_is_refused_quickly() -> None:
    issue = refusal(BOMB)
    assert where(issue) == (
        4,
        1,
        "alias-bomb",
        "aliases expand to more than 10000 extra nodes here (anchor '&c'); this looks like "
        "an alias bomb: write the values out, or use fewer aliases",
    )


def test_the_alias_budget_is_configurable_and_honest_aliases_pass() -> None:
    text = "d: &d {retries: 3, timeout: 5m}\na: *d\nb: *d\n"
    assert parse_document(text).data["b"] == {"retries": 3, "timeout": "5m"}
    assert refusal(text, max_alias_nodes=4).code == "alias-bomb"


def test_a_recursive_alias_is_refused() -> None:
    assert where(refusal("a: &x [1, *x]\n")) == (
        1,
        4,
        "recursive-alias",
        "anchor '&x' contains an alias to itself; a runbook cannot hold a recursive structure",
    )


def test_a_recursive_merge_is_refused() -> None:
    assert refusal("a: &x {b: 1, <<: *x}\n").code == "recursive-alias"


def test_merging_a_scalar_is_refused() -> None:
    assert where(refusal("a: &s 1\nb: {<<: *s}\n")) == (
        1,
        4,
        "bad-merge",
        "'<<' merges only mappings (e.g. '<<: *defaults')",
    )


@pytest.mark.parametrize(
    ("text", "got"),
    [("- a\n- b\n", "a list"), ("just text\n", "the scalar 'just text'")],
)
def test_a_document_that_is_not_a_mapping_is_refused(text: str, got: str) -> None:
    assert where(refusal(text)) == (
        1,
        1,
        "not-a-mapping",
        f"the top level of a runbook must be a mapping (key: value), got {got}",
    )


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_document_is_refused(text: str) -> None:
    assert where(refusal(text)) == (
        1,
        1,
        "not-a-mapping",
        "the file is empty; a runbook is a mapping that starts with 'apiVersion: runbook/v1'",
    )


def test_more_than_one_document_is_refused_where_the_second_starts() -> None:
    assert where(refusal("a: 1\n---\nb: 2\n")) == (
        2,
        1,
        "multiple-documents",
        "a second YAML document starts here; a runbook file holds exactly one: remove the "
        "'---' and what follows, or move it to its own file",
    )


def test_a_single_document_with_markers_is_fine() -> None:
    assert parse_document("---\na: 1\n...\n").data == {"a": 1}


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("a: !vault x\n", "!vault"),
        ("a: !!set {x}\n", "tag:yaml.org,2002:set"),
        ("a: !!python/none x\n", "tag:yaml.org,2002:python/none"),
    ],
)
def test_unsupported_tags_are_refused(text: str, tag: str) -> None:
    assert where(refusal(text)) == (
        1,
        4,
        "unsupported-tag",
        f"unsupported YAML tag '{tag}'; runbooks use plain YAML: remove the tag",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "yes: 1\n",
            "key 'yes' is read as a boolean, not as text; quote it (\"yes\") to use it as a key",
        ),
        (
            "200: ok\n",
            "key '200' is read as a number, not as text; quote it (\"200\") to use it as a key",
        ),
        ("? [a, b]\n: 1\n", "a key must be plain text, not a list or a mapping"),
    ],
)
def test_keys_that_are_not_text_are_refused(text: str, message: str) -> None:
    assert where(refusal(text)) == (1, 1 if "?" not in text else 3, "non-string-key", message)


def test_quoted_keys_that_look_like_other_types_are_text() -> None:
    assert parse_document('"yes": 1\n"200": ok\n').data == {"yes": 1, "200": "ok"}


def test_deep_flow_nesting_is_refused_before_libyaml_can_overflow() -> None:
    issue = refusal("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert where(issue) == (
        1,
        103,
        "too-deep",
        "nesting is deeper than 100 levels here; a runbook never needs this",
    )


def test_moderate_nesting_over_the_limit_is_refused_by_the_walk() -> None:
    assert refusal("a: " + "[" * 150 + "]" * 150 + "\n").code == "too-deep"
    assert parse_document("a: " + "[" * 50 + "]" * 50 + "\n").data["a"]


# --------------------------------------------------------------------------- files


def test_load_document_reads_a_file(tmp_path) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text(SAMPLE, encoding="utf-8")
    doc = load_document(path)
    assert doc.path == str(path)
    assert doc.data["metadata"]["name"] == "disk-pressure"


def test_a_missing_file_is_not_found(tmp_path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        load_document(tmp_path / "nope.yaml")


def test_a_directory_is_unreadable(tmp_path) -> None:
    with pytest.raises(ValidationFailed) as caught:
        load_document(tmp_path)
    assert caught.value.issues[0].code == "unreadable"
    assert caught.value.issues[0].message.startswith("cannot read the file: ")


def test_a_large_file_is_refused_without_reading_it_whole(tmp_path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: " + b"x" * 5000)
    with pytest.raises(ValidationFailed) as caught:
        load_document(path, max_bytes=100)
    assert caught.value.issues[0].code == "too-large"
    assert str(caught.value.issues[0]).startswith(f"{path}:1:1: ")
