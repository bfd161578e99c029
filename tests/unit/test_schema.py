"""The JSON Schema file itself: well-formed, documented, strict, and agreeing with the model."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executor import model
from executor.errors import ValidationFailed
from executor.loader import load_document
from executor.validation import (
    SCHEMA_PATH,
    _compile_fast,
    _EcmaValidator,
    _fast_validator,
    _full_validator,
    schema,
)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "tests" / "corpus").glob("*.yaml"))
FIXTURES = sorted((ROOT / "tests" / "fixtures").glob("*.yaml"))


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def object_schemas() -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    for path, node in walk(schema()):
        is_object = isinstance(node, dict) and isinstance(node.get("properties"), dict)
        constraint = "dependentSchemas" in path  # "ssh excludes ansible...", not an object
        if is_object and not constraint and path[-1:] != ("properties",):
            yield path, node


def fast_accepts(data: Any) -> bool:
    try:
        _fast_validator()(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def full_accepts(data: Any) -> bool:
    return not list(_full_validator().iter_errors(data))


def test_the_schema_file_is_the_one_validation_uses() -> None:
    assert SCHEMA_PATH == ROOT / "schemas" / "runbook.schema.json"
    assert json.loads(SCHEMA_PATH.read_text(encoding="utf-8")) == schema()


def test_the_schema_is_valid_draft_2020_12_with_a_versioned_id() -> None:
    loaded = schema()
    jsonschema.Draft202012Validator.check_schema(loaded)
    assert loaded["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert loaded["$id"] == "https://runbook.dev/schemas/runbook/v1.json"
    assert loaded["properties"]["apiVersion"]["const"] == model.API_VERSION
    assert loaded["properties"]["kind"]["const"] == model.KIND


def test_every_object_forbids_unknown_keys() -> None:
    loose = [
        path for path, node in object_schemas() if node.get("additionalProperties") is not False
    ]
    assert loose == []


def test_every_property_has_a_description() -> None:
    missing = [
        (*path, name)
        for path, node in object_schemas()
        for name, prop in node["properties"].items()
        if not prop.get("description")
    ]
    assert missing == []
    assert len(list(object_schemas())) >= 20


def test_every_example_is_valid_where_it_is_given() -> None:
    validator_cls = jsonschema.Draft202012Validator
    checked = 0
    for path, node in walk(schema()):
        if isinstance(node, dict) and "examples" in node and path[-1:] != ("properties",):
            sub = {**node, "$defs": schema()["$defs"]}
            for example in node["examples"]:
                assert not list(validator_cls(sub).iter_errors(example)), (path, example)
                checked += 1
    assert checked >= 15
    top = schema()["examples"][0]
    assert fast_accepts(top)
    assert full_accepts(top)


def test_the_steps_of_the_model_are_all_in_the_schema() -> None:
    step = schema()["$defs"]["step"]["properties"]
    assert set(model.ACTION_KINDS) <= set(step)
    assert {"id", "needs", "when", "trigger", "outputs", "timeout", "retries"} <= set(step)
    assert {"on_failure", "rollback", "assert", "name"} <= set(step)
    assert schema()["$defs"]["step"]["properties"]["trigger"]["enum"] == [
        t.value for t in model.Trigger
    ]
    assert step["on_failure"]["enum"] == [o.value for o in model.OnFailure]
    policy = schema()["$defs"]["policy"]["properties"]
    assert policy["automation"]["enum"] == [a.value for a in model.Automation]


def test_the_duration_pattern_is_the_models_own() -> None:
    branches = schema()["$defs"]["duration"]["anyOf"]
    assert branches[0]["pattern"] == model._DURATION.pattern


DURATION_TEXT = st.one_of(
    st.from_regex(r"\A\s?\d{1,4}(\.\d{1,2})?\s?(ms|s|m|h|d|sec|min|x)?\s?\Z"),
    st.text(alphabet="0123456789.msdh -\t\n", max_size=8),
)


DURATION_SCHEMA = {"$ref": "#/$defs/duration", "$defs": schema()["$defs"]}
FAST_DURATION = _compile_fast(DURATION_SCHEMA)
FULL_DURATION = _EcmaValidator(DURATION_SCHEMA)


def accepts_duration(value: Any) -> tuple[bool, bool]:
    """(fast, full) verdicts on ``value`` as a duration, with the validators validation builds."""
    try:
        FAST_DURATION(value)
        fast = True
    except fastjsonschema.JsonSchemaException:
        fast = False
    return fast, not list(FULL_DURATION.iter_errors(value))


def test_a_duration_inside_a_runbook_is_checked_by_both_validators() -> None:
    document = copy.deepcopy(schema()["examples"][0])
    document["policy"]["timeout"] = "90s"
    assert (fast_accepts(document), full_accepts(document)) == (True, True)
    document["policy"]["timeout"] = "90 s\n"
    assert (fast_accepts(document), full_accepts(document)) == (True, True)
    document["policy"]["timeout"] = "ninety"
    assert (fast_accepts(document), full_accepts(document)) == (False, False)


def parses(value: Any) -> bool:
    try:
        model.parse_duration(value)
    except ValueError:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(DURATION_TEXT)
def test_a_duration_string_is_valid_exactly_when_the_model_parses_it(text: str) -> None:
    assert accepts_duration(text) == (parses(text), parses(text))


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.integers(min_value=0), st.floats(min_value=0, allow_nan=False, allow_infinity=False)
    )
)
def test_a_non_negative_number_of_seconds_is_a_duration(value: float) -> None:
    assert accepts_duration(value) == (True, True)
    assert parses(value)


@pytest.mark.parametrize("value", [True, False, None, [], {}, -1, "-5s", "5 minutes", "1w"])
def test_things_that_are_not_durations_are_refused(value: Any) -> None:
    assert accepts_duration(value) == (False, False)


def documents() -> Iterator[Any]:
    for path in [*CORPUS, *FIXTURES]:
        try:
            yield load_document(path).data
        except ValidationFailed:
            continue


def mutations(data: dict[str, Any]) -> Iterator[Any]:
    """Small edits of a valid runbook that exercise refs with siblings and dependencies."""
    for key, value in [
        ("approvers", []),
        ("quorum", 0),
        ("timeout", "soon"),
        ("message", 5),
    ]:
        mutated = copy.deepcopy(data)
        mutated["steps"][1]["approval"][key] = value
        yield mutated
    mutated = copy.deepcopy(data)
    mutated["steps"][2]["ansible"]["args"] = {"x": 1}
    yield mutated
    mutated = copy.deepcopy(data)
    mutated["metadata"]["name"] = "disk\n"
    yield mutated
    mutated = copy.deepcopy(data)
    mutated["steps"][0]["local"] = {"command": "x"}
    yield mutated


def test_the_fast_and_the_full_validator_always_agree() -> None:
    fixture = load_document(ROOT / "tests" / "fixtures" / "disk-pressure.yaml").data
    cases = [*documents(), *mutations(fixture)]
    assert len(cases) >= 50
    disagree = [case for case in cases if fast_accepts(case) != full_accepts(case)]
    assert disagree == []
    assert sum(1 for case in cases if not full_accepts(case)) >= 30
