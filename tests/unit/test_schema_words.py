"""The shared words for JSON Schema errors: each piece alone, then the plain explainer."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema.exceptions import ValidationError

from executor import schema_words as sw
from executor.loader import DocPath, parse_document
from executor.schema_words import Format, Found

# --------------------------------------------------------------------------- helpers


def errors(schema: dict[str, Any], instance: Any) -> list[ValidationError]:
    return list(jsonschema.Draft202012Validator(schema).iter_errors(instance))


def only(schema: dict[str, Any], instance: Any) -> ValidationError:
    found = errors(schema, instance)
    assert len(found) == 1, [e.message for e in found]
    return found[0]


def place(path: DocPath, data: Any) -> str:
    return f"'{sw.dotted(path)}'" if path else "the thing"


PLAIN = Format(describe=place)

ACTION = {
    "oneOf": [
        {
            "type": "object",
            "required": ["ssh"],
            "additionalProperties": False,
            "properties": {"ssh": {"type": "string"}, "sudo": {"type": "boolean"}},
        },
        {
            "type": "object",
            "required": ["wait"],
            "additionalProperties": False,
            "properties": {"wait": {"type": "integer"}},
        },
    ]
}

# --------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (True, "true"),
        (False, "false"),
        (None, "nothing (null)"),
        ("disk", "'disk'"),
        ("x" * 41, repr("x" * 37 + "...")),
        ("x" * 40, repr("x" * 40)),
        ({"a": 1}, "a mapping"),
        ([1, 2], "a list"),
        (90, "90"),
        (2.5, "2.5"),
    ],
)
def test_show_says_a_value_briefly(value: Any, words: str) -> None:
    assert sw.show(value) == words
    assert sw.show(value, typed=True) == words


def test_show_names_the_type_of_an_unusual_value_only_when_asked() -> None:
    day = datetime.date(2024, 1, 2)
    assert sw.show(day) == "2024-01-02"
    assert sw.show(day, typed=True) == "date 2024-01-02"


def test_dotted_paths_read_as_written() -> None:
    assert sw.dotted(()) == ""
    assert sw.dotted(("retries", "count")) == "retries.count"
    assert sw.dotted(("steps", 2, "ssh", "command")) == "steps[2].ssh.command"
    assert sw.dotted([0, "a"]) == "[0].a"


def test_type_words() -> None:
    assert sw.type_words("integer") == "an integer"
    assert sw.type_words(["string", "null"]) == "a string or null"
    assert sw.type_words("object") == "a mapping"
    assert sw.type_words("weird") == "weird"
    assert sw.type_words("integer", {"integer": "a whole number"}) == "a whole number"


def test_one_of_joins_any_values() -> None:
    assert sw.one_of(["manual", "approval", 3]) == "manual, approval, 3"
    assert sw.one_of([]) == ""


def test_closest_finds_a_near_miss_and_nothing_for_a_far_one() -> None:
    assert sw.closest("sudoo", ["command", "sudo", "target"]) == "sudo"
    assert sw.closest("zebra", ["command", "sudo"]) is None
    assert sw.closest("sudo", [1, None]) is None  # only strings are candidates


def test_did_you_mean_is_a_ready_suffix() -> None:
    assert sw.did_you_mean("comand", ["command"]) == "; did you mean 'command'?"
    assert sw.did_you_mean("it's", ["it's x"]) == '; did you mean "it\'s x"?'
    assert sw.did_you_mean("zzz", ["command"]) == ""


# --------------------------------------------------------------------------- keys


def test_unknown_and_allowed_keys_in_order() -> None:
    schema = {"type": "object", "additionalProperties": False, "properties": {"b": {}, "a": {}}}
    error = only(schema, {"z": 1, "a": 1, "y": 2})
    assert sw.unknown_keys(error) == ["z", "y"]
    assert sw.allowed_keys(error) == ["b", "a"]


def test_unknown_keys_respect_pattern_properties() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"a": {}},
        "patternProperties": {"^x-": {}},
    }
    assert sw.unknown_keys(only(schema, {"x-note": 1, "nope": 2})) == ["nope"]


def test_missing_keys_lists_every_absent_required_key() -> None:
    schema = {"type": "object", "required": ["a", "b", "c"]}
    found = errors(schema, {"b": 1})
    assert len(found) == 2
    assert all(sw.missing_keys(e) == ["a", "c"] for e in found)


def test_title_of_the_failing_node() -> None:
    assert sw.title(only({"title": "duration", "type": "string"}, 3)) == "duration"
    assert sw.title(only({"type": "string"}, 3)) is None


# --------------------------------------------------------------------------- choosing


def test_the_branch_meant_is_the_one_whose_shape_fits() -> None:
    error = only(ACTION, {"ssh": "uptime", "sudoo": True})
    meant = sw.meant_branch(error)
    assert meant is not None
    assert [e.validator for e in meant] == ["additionalProperties"]
    leaves = list(sw.leaves(error))
    assert [e.validator for e in leaves] == ["additionalProperties"]
    assert sw.unknown_keys(leaves[0]) == ["sudoo"]


def test_a_value_no_branch_fits_stays_whole() -> None:
    error = only(ACTION, "uptime")
    assert sw.meant_branch(error) is None
    assert list(sw.leaves(error)) == [error]


def test_errors_outside_a_choice_are_their_own_leaves() -> None:
    error = only({"type": "integer"}, "x")
    assert list(sw.leaves(error)) == [error]


def test_nested_choices_are_followed_down() -> None:
    schema = {"oneOf": [{"type": "string"}, {"type": "object", "properties": {"a": ACTION}}]}
    error = only(schema, {"a": {"wait": "soon"}})
    leaves = list(sw.leaves(error))
    assert [(e.validator, list(e.absolute_path)) for e in leaves] == [("type", ["a", "wait"])]


def test_const_can_rule_a_branch_out() -> None:
    schema = {
        "oneOf": [
            {"const": "auto"},
            {"type": "string", "pattern": "^[0-9]+s$"},
        ]
    }
    error = only(schema, "soon")
    assert sw.meant_branch(error) is not None  # a const miss alone leaves the branch viable
    meant = sw.meant_branch(error, mismatch=("type", "const"))
    assert meant is not None and [e.validator for e in meant] == ["pattern"]


def test_a_chooser_picks_among_viable_branches() -> None:
    error = only(ACTION, {"ssh": 1, "wait": "x"})
    fewest = sw.meant_branch(error)
    last = sw.meant_branch(error, choose=lambda e, viable: max(viable))
    assert fewest is not None and last is not None
    # two errors each: the first of equals wins by default, the chooser overrides it
    assert [list(e.absolute_path) for e in fewest if e.validator == "type"] == [["ssh"]]
    assert [list(e.absolute_path) for e in last if e.validator == "type"] == [["wait"]]


def test_branches_group_sub_errors_by_alternative() -> None:
    error = only(ACTION, {"ssh": 1, "wait": "x"})
    grouped = sw.branches(error)
    assert sorted(grouped) == [0, 1]
    assert sum(len(v) for v in grouped.values()) == len(error.context)


# --------------------------------------------------------------------------- plain explainer


def explained(schema: dict[str, Any], instance: Any, fmt: Format = PLAIN) -> list[Found]:
    return [
        found
        for error in errors(schema, instance)
        for leaf in sw.leaves(error, choose=fmt.choose)
        for found in sw.explain(leaf, instance, fmt)
    ]


def messages(schema: dict[str, Any], instance: Any, fmt: Format = PLAIN) -> list[str]:
    return [f.message for f in explained(schema, instance, fmt)]


def test_plain_unknown_key_points_at_the_key_with_a_suggestion() -> None:
    schema = {"type": "object", "properties": {"x": ACTION}}
    found = explained(schema, {"x": {"ssh": "uptime", "sudoo": True}})
    assert found == [
        Found(
            ("x", "sudoo"),
            "unknown key 'sudoo' in 'x'; did you mean 'sudo'? (allowed: ssh, sudo)",
            key=True,
        )
    ]


def test_plain_missing_key_uses_the_format_hint() -> None:
    fmt = Format(describe=place, missing_hints={"name": "give it a name"})
    schema = {"type": "object", "required": ["name", "kind"]}
    assert sorted(set(messages(schema, {}, fmt))) == [
        "the thing has no 'kind': it is required",
        "the thing has no 'name': give it a name",
    ]


@pytest.mark.parametrize(
    ("schema", "instance", "message"),
    [
        ({"type": "integer"}, "two", "the thing must be an integer, got 'two'"),
        ({"type": ["string", "null"]}, 3, "the thing must be a string or null, got 3"),
        ({"enum": ["auto", "manual"]}, "never", "the thing must be auto, manual, got 'never'"),
        ({"const": "runbook/v1"}, "v1", "the thing must be runbook/v1, got 'v1'"),
        ({"minItems": 1}, [], "the thing must not be empty"),
        ({"minLength": 1}, "", "the thing must not be empty"),
        ({"minProperties": 1}, {}, "the thing must not be empty"),
        ({"minimum": 50}, 10, "the thing must be at least 50"),
        ({"maximum": 99}, 100, "the thing must be at most 99"),
        ({"pattern": "^a"}, "b", "the thing: 'b' is not in the expected form"),
        ({"multipleOf": 5}, 7, "the thing: 7 is not a multiple of 5"),
    ],
)
def test_plain_sentences(schema: dict[str, Any], instance: Any, message: str) -> None:
    assert messages(schema, instance) == [message]


def test_a_format_may_say_types_its_own_way() -> None:
    fmt = Format(describe=place, types={"integer": "a whole number"})
    assert messages({"type": "integer"}, "x", fmt) == ["the thing must be a whole number, got 'x'"]


def test_plain_enum_suggests_the_near_choice() -> None:
    assert messages({"enum": ["approval", "auto"]}, "aproval") == [
        "the thing must be approval, auto, got 'aproval'; did you mean 'approval'?"
    ]


def test_plain_choice_says_the_alternatives_in_the_format_words() -> None:
    schema = {"title": "duration", "anyOf": [{"type": "string"}, {"type": "number"}]}
    fmt = Format(describe=place, alternatives={"duration": "a duration such as 30s"})
    assert messages(schema, [1], fmt) == ["the thing must be a duration such as 30s, got a list"]
    assert messages(schema, [1]) == ["the thing must be one of the allowed forms, got a list"]


def test_form_comes_from_the_parent_title_too() -> None:
    schema = {"title": "duration", "anyOf": [{"type": "string", "pattern": "^[0-9]+s$"}]}
    fmt = Format(describe=place, alternatives={"duration": "a duration such as 30s"})
    assert messages(schema, "soon", fmt) == ["the thing: 'soon' is not a duration such as 30s"]


def test_a_format_handler_replaces_a_sentence_or_passes() -> None:
    def loud_pattern(error: ValidationError, path: DocPath, where: str, fmt: Format) -> Any:
        if error.instance == "pass":
            return None
        return [Found(path, f"{where} is wrong", code="mine")]

    fmt = Format(describe=place, handlers={"pattern": loud_pattern})
    assert explained({"pattern": "^a"}, "b", fmt) == [Found((), "the thing is wrong", "mine")]
    assert messages({"pattern": "^a"}, "pass", fmt) == [
        "the thing: 'pass' is not in the expected form"
    ]


# --------------------------------------------------------------------------- documents


def test_schema_issues_point_at_line_and_column(tmp_path: Path) -> None:
    schema_path = tmp_path / "thing.schema.json"
    schema_path.write_text(
        json.dumps(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "action": ACTION},
            }
        ),
        encoding="utf-8",
    )
    doc = parse_document("name: x\naction:\n  wait: soon\nextra: 1\n", "t.yaml")
    validator = sw.validator_for(schema_path)
    issues = sw.schema_issues(doc, validator, PLAIN, "thing-schema")
    assert sorted(str(i) for i in issues) == [
        "t.yaml:3:9: 'action.wait' must be an integer, got 'soon'",
        "t.yaml:4:1: unknown key 'extra' in the thing (allowed: name, action)",
    ]
    assert {i.code for i in issues} == {"thing-schema"}
    assert sw.validator_for(schema_path) is validator
    assert sw.load_schema(schema_path) is sw.load_schema(schema_path)


def test_positioned_keeps_a_sentence_own_code() -> None:
    doc = parse_document("a:\n  b: 1\n", "t.yaml")
    issues = sw.positioned(
        doc, [Found(("a", "b"), "one", "own"), Found(("a", "b"), "two", key=True)], "default"
    )
    assert [(i.line, i.column, i.code) for i in issues] == [(2, 6, "own"), (2, 3, "default")]


def test_a_routes_file_whose_match_is_not_a_list_is_reported_not_crashed_on() -> None:
    from executor.triggers.routes import validate_routes_document

    text = "apiVersion: runbook/v1\nkind: Routes\nroutes:\n  - {name: a, match: true, runbook: x}\n"
    issues = validate_routes_document(parse_document(text, "r.yaml"))
    assert [str(i) for i in issues] == ["r.yaml:4:22: routes[0] (a).match must be a list, not bool"]
