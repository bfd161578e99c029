"""Tests for executor.expressions: analysis, sandbox, rendering and shell quoting."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor.errors import ExpressionError, RunbookError
from executor.expressions import (
    CONTEXT_NAMES,
    ExpressionInfo,
    ExpressionSyntaxError,
    analyze,
    check_command,
    collect_secrets,
    evaluate,
    render,
    render_command,
    render_data,
)

INJECTION = "$(touch /tmp/pwned); rm -rf x"


def make_context(**overrides: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "inputs": {"host": "web1", "threshold": 90},
        "steps": {
            "measure": {
                "status": "succeeded",
                "outputs": {"percent": 95},
                "hosts": {"web-1": {"rc": 0, "stdout": "95\n", "stderr": ""}},
            }
        },
        "result": {"ok": True, "rc": 0, "stdout": "42\n", "stderr": "", "hosts": {}},
        "run": {"id": "r-1", "trigger": "manual", "actor": "alice", "dry_run": False},
        "alert": {"labels": {"instance": INJECTION}, "annotations": {}},
        "secrets": {"db": {"password": "hunter2-very-secret"}},
    }
    context.update(overrides)
    return context


def refs(source: str, kind: str = "expression") -> set[tuple[str, ...]]:
    return set(analyze(source, kind=kind).references)


# --------------------------------------------------------------------------- analyze


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("inputs.host", {("inputs", "host")}),
        ('inputs["host"]', {("inputs", "host")}),
        (
            "steps.measure.outputs.percent >= inputs.threshold",
            {("steps", "measure", "outputs", "percent"), ("inputs", "threshold")},
        ),
        ("steps.s.hosts['web-1'].rc == 0", {("steps", "s", "hosts", "web-1", "rc")}),
        ("steps[inputs.step].status", {("steps",), ("inputs", "step")}),
        ("x[y].z", {("x",), ("y",)}),
        ("result.hosts[0].rc", {("result", "hosts")}),
        ("inputs.host.upper()", {("inputs", "host")}),
        ("inputs.host.split(inputs.sep)", {("inputs", "host"), ("inputs", "sep")}),
        ("result.stdout | int < inputs.threshold", {("result", "stdout"), ("inputs", "threshold")}),
        ("inputs.a | default(inputs.b)", {("inputs", "a"), ("inputs", "b")}),
        ("inputs.a is divisibleby(inputs.n)", {("inputs", "a"), ("inputs", "n")}),
        (
            "inputs.a if run.dry_run else alert.labels.x",
            {("inputs", "a"), ("run", "dry_run"), ("alert", "labels", "x")},
        ),
        ("foo", {("foo",)}),
        ("self", {("self",)}),
        ("range(3) | list", set()),
        ("dict(a=inputs.x)", {("inputs", "x")}),
        ("[inputs.a, {'k': steps.b.status}]", {("inputs", "a"), ("steps", "b", "status")}),
        ("(inputs.a or inputs.b).c", {("inputs", "a"), ("inputs", "b")}),
        ("'a' ~ inputs.b", {("inputs", "b")}),
        ("true and not false", set()),
    ],
)
def test_expression_references(source: str, expected: set[tuple[str, ...]]) -> None:
    assert refs(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{% for h in steps.a.hosts %}{{ h }}{{ loop.index }}{% endfor %}{{ h }}",
            {("steps", "a", "hosts"), ("h",)},
        ),
        ("{% set x = inputs.a %}{{ x.b }}", {("inputs", "a")}),
        ("{{ x }}{% set x = inputs.a %}", {("x",), ("inputs", "a")}),
        ("{% set ns = namespace(a=1) %}{% set ns.a = inputs.z %}{{ ns.a }}", {("inputs", "z")}),
        ("{% set other.a = 2 %}", {("other",)}),
        (
            "{% macro m(a, b=inputs.d) %}{{ a }}{{ caller }}{{ c }}{% endmacro %}{{ m(inputs.z) }}",
            {("inputs", "d"), ("c",), ("inputs", "z")},
        ),
        (
            "{% for k, v in inputs.m.items() %}{{ k }}={{ v }}{% else %}{{ k }}{% endfor %}",
            {("inputs", "m"), ("k",)},
        ),
        (
            "{% for i in inputs.l if i > inputs.min %}{{ i }}{% endfor %}",
            {("inputs", "l"), ("inputs", "min")},
        ),
        ("{% with a = inputs.q %}{{ a.b }}{% endwith %}{{ a }}", {("inputs", "q"), ("a",)}),
        ("{% set blk %}{{ inputs.x }}{% endset %}{{ blk }}", {("inputs", "x")}),
        (
            "{% if run.dry_run %}echo {{ inputs.host }}{% endif %}",
            {("run", "dry_run"), ("inputs", "host")},
        ),
        ("{% filter upper %}{{ inputs.a }}{% endfilter %}", {("inputs", "a")}),
        ("Delete logs on {{ inputs.host }}?", {("inputs", "host")}),
        ("{{ result.stdout | int }}", {("result", "stdout")}),
        ("{# {{ not.a.reference }} #}plain", set()),
        ("df --output=pcent / | tail -1", set()),
    ],
)
def test_template_references(source: str, expected: set[tuple[str, ...]]) -> None:
    assert refs(source, "template") == expected


@pytest.mark.parametrize(
    "source",
    ["inputs.host", "steps.a.outputs.b | int | string", "run.id|trim"],
)
def test_shortcut_for_simple_paths_agrees_with_the_parser(source: str) -> None:
    # parentheses force the full Jinja parse; the shortcut must give the same answer
    assert refs(source) == refs(f"({source})")
    assert refs(f"x {{{{ {source} }}}} y", "template") == refs(
        f"x {{{{ ({source}) }}}} y", "template"
    )


def test_shortcut_does_not_hide_unknown_filters() -> None:
    with pytest.raises(ExpressionSyntaxError, match="unknown filter 'nosuch'"):
        analyze("inputs.host | nosuch", kind="expression")
    with pytest.raises(ExpressionSyntaxError, match="unknown filter 'nosuch'"):
        analyze("x {{ inputs.host | nosuch }}", kind="template")


@pytest.mark.parametrize(
    ("source", "kind", "message", "lineno"),
    [
        ("a }", "expression", "unexpected '}' in expression", 1),
        ("a and\n(b or", "expression", "unexpected end of the expression", 2),
        ("a b", "expression", "unexpected 'b' after the end of the expression", 1),
        ("steps.x.", "expression", "expected name or number", 1),
        ("'open", "expression", "unexpected char", 1),
        ("echo {{ a }", "template", "unexpected '}' in template", 1),
        ("line1\nline2\n{% if %}", "template", "Expected an expression", 3),
        ("{% for x in y %}", "template", "Unexpected end of the template", 1),
        ("a |\n\n nosuch", "expression", "unknown filter 'nosuch'", 3),
        ("x is nosuchtest", "expression", "unknown test 'nosuchtest'", 1),
        ("one\n{{ two | nosuch }}", "template", "unknown filter 'nosuch'", 2),
        ("{% filter nosuch %}x{% endfilter %}", "template", "unknown filter 'nosuch'", 1),
    ],
)
def test_syntax_errors_have_words_and_line_numbers(
    source: str, kind: str, message: str, lineno: int
) -> None:
    with pytest.raises(ExpressionSyntaxError) as caught:
        analyze(source, kind=kind)
    assert message in caught.value.message
    assert caught.value.lineno == lineno
    assert caught.value.source == source
    assert isinstance(caught.value, ExpressionError)
    assert isinstance(caught.value, RunbookError)


def test_unknown_filter_suggests_the_close_one() -> None:
    with pytest.raises(ExpressionSyntaxError) as caught:
        analyze("result.stdout | innt", kind="expression")
    assert caught.value.hint == "did you mean 'int'?"


def test_kind_must_be_known() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        analyze("a", kind="guard")


@pytest.mark.parametrize(
    ("source", "kind", "constant"),
    [
        ("true", "expression", (True, True)),
        ("false or none", "expression", (True, None)),
        ("'abc' | upper", "expression", (True, "ABC")),
        ("[1, 2] | length == 2", "expression", (True, True)),
        ("1 / 0", "expression", (False, None)),
        ("inputs.a == 1", "expression", (False, None)),
        ("range(3) | list", "expression", (False, None)),
        ("plain text\n", "template", (True, "plain text\n")),
        ("{{ 3 }}", "template", (True, 3)),
        ("a {{ 'b' }} c", "template", (True, "a b c")),
        ("{% if true %}x{% endif %}", "template", (False, None)),
        ("{{ inputs.host }}", "template", (False, None)),
    ],
)
def test_constant_folding(source: str, kind: str, constant: tuple[bool, Any]) -> None:
    assert analyze(source, kind=kind).constant == constant


def test_string_repetition_is_never_folded_at_parse_time() -> None:
    started = time.perf_counter()
    info = analyze("'x' * 10**9", kind="expression")
    assert info == ExpressionInfo(frozenset(), (False, None))
    assert time.perf_counter() - started < 0.5


def test_analysis_is_cached_by_source() -> None:
    first = analyze("steps.cache_probe.status == 'succeeded'", kind="expression")
    assert analyze("steps.cache_probe.status == 'succeeded'", kind="expression") is first


def test_analysis_is_fast_enough_for_validation() -> None:
    # ~40 distinct strings per runbook must fit well inside a ~13 ms budget
    sources = [
        (f"steps.s{i}.outputs.percent >= inputs.threshold and run.dry_run == false", "expression")
        for i in range(10)
    ] + [(f"echo {{{{ inputs.host{i} }}}} on {{{{ run.id }}}}", "template") for i in range(30)]
    started = time.perf_counter()
    for source, kind in sources:
        analyze(source, kind=kind)
    assert time.perf_counter() - started < 0.013 * 3  # generous: shared CI machines


def test_context_names_are_the_documented_ones() -> None:
    assert {"inputs", "steps", "result", "run", "alert", "secrets"} == CONTEXT_NAMES


# --------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("steps.measure.outputs.percent >= inputs.threshold", True),
        ("result.stdout | int < inputs.threshold", True),
        ("result.stdout | int", 42),
        ("steps.measure.hosts['web-1'].rc == 0", True),
        ("steps.measure.status == 'succeeded' and not run.dry_run", True),
        ("alert.labels.instance", INJECTION),
        ("inputs.host.upper()", "WEB1"),
        ("[1, 2, 3] | sum", 6),
        ("range(3) | list", [0, 1, 2]),
        ("none", None),
        ("result", make_context()["result"]),
    ],
)
def test_evaluate_returns_native_values(expression: str, expected: Any) -> None:
    assert evaluate(expression, make_context()) == expected


def test_undefined_path_is_named_in_full() -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate("steps.measure.outputs.pct > 3", make_context())
    assert str(caught.value.message) == (
        "'steps.measure.outputs.pct' is undefined in expression 'steps.measure.outputs.pct > 3'"
    )
    assert caught.value.hint


@pytest.mark.parametrize(
    ("expression", "missing"),
    [
        ("inputs.nosuch", "'inputs.nosuch' is undefined"),
        ("steps.nosuch.outputs.x == 1", "'steps.nosuch' is undefined"),
        ("inputs.nosuch | default('d') ~ inputs.other", "'inputs.other' is undefined"),
        ("typo.field", "'typo' is undefined"),
    ],
)
def test_strict_undefined(expression: str, missing: str) -> None:
    with pytest.raises(ExpressionError, match=missing):
        evaluate(expression, make_context())


def test_default_filter_still_works_with_strict_undefined() -> None:
    assert evaluate("inputs.nosuch | default('d')", make_context()) == "d"
    assert evaluate("inputs.nosuch is defined", make_context()) is False


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "cycler.__init__.__globals__",
        "joiner",
        "lipsum()",
        "self",
        "self._TemplateReference__context",
        "range.__globals__",
        "inputs.__class__",
        "inputs.update({'host': 'x'})",
        "inputs.threshold.__class__.__base__",
        "'{0.__class__}'.format(inputs)",
        "steps.measure.outputs.clear()",
    ],
)
def test_sandbox_escapes_are_refused(expression: str) -> None:
    context = make_context()
    with pytest.raises(ExpressionError):
        evaluate(expression, context)
    assert context["inputs"] == {"host": "web1", "threshold": 90}  # nothing was mutated


@pytest.mark.parametrize(
    "expression",
    [
        "range(10**9)",
        "'x' * 10**9",
        "10**9 * 'x'",
        "[1] * 10**9",
        "2 ** 100000",
        "'%999999999s' % 'x'",
        "'%*d' % (999999999, 1)",
        "'%s' | format('x') ~ ('%999999999d' | format(1))",
        "'{:>999999999}'.format('x')",
        "'{:>{w}}'.format('x', w=999999999)",
        "'x'.center(999999999)",
        "'x'.ljust(999999999)",
        "'1'.zfill(999999999)",
        "'x' | center(999999999)",
        "('x' * 1000000).replace('x', 'xxxxxxxxxxxxxxxxxx')",
        "('x' * 1000000) | replace('x', 'xxxxxxxxxxxxxxxxxx')",
        "('x' * 1000000) | regex_replace('x', 'xxxxxxxxxxxxxxxxxx')",
        "range(100000) | join('x' * 1000)",
        "('x' * 1000).join(range(100000) | map('string'))",
        "('a\tb' * 100000).expandtabs(1000)",
        "('x\n' * 100000) | indent(1000)",
        "[1] | slice(10**9)",
        "('x' * 5000000) ~ ('x' * 5000000)",
        "('x' * 5000000) + ('x' * 5000000)",
    ],
)
def test_resource_limits_fail_fast(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ExpressionError, match="sandbox"):
        evaluate(expression, make_context())
    assert time.perf_counter() - started < 1.0


def test_limits_do_not_get_in_the_way_of_normal_use() -> None:
    assert evaluate("'-' * 80", {}) == "-" * 80
    assert evaluate("'%5.1f%%' % 93.25", {}) == " 93.2%"
    assert evaluate("'{:>6}'.format('ab')", {}) == "    ab"
    assert evaluate("'port 65535: {}'.format(1)", {}) == "port 65535: 1"
    assert evaluate("[1, 2] + [3]", {}) == [1, 2, 3]
    assert evaluate("2 ** 10", {}) == 1024
    assert render("{% for i in range(3) %}{{ i }}{% endfor %}", {}) == "012"


@pytest.mark.parametrize(
    "template",
    [
        "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "{% macro grow(s) %}{{ grow(s ~ s) }}{% endmacro %}{{ grow('xx') }}",
    ],
)
def test_template_growth_is_bounded(template: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ExpressionError):
        render(template, {})
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "ZeroDivisionError"),
        ("none.attribute", "'None' has no attribute 'attribute'"),
        ("'a' + 1", "TypeError"),
        ("result.stderr | int", "cannot read '' as an integer"),
        ("'abc' | float", "cannot read 'abc' as a number"),
        ("'{' | from_json", "JSONDecodeError"),
        ("'!!' | b64decode", "Error"),
        ("[] | first", "No first item"),
        ("'x' | regex_search('(')", "error"),
    ],
)
def test_runtime_errors_become_expression_errors(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        evaluate(expression, make_context())
    assert message in str(caught.value)
    assert repr(expression) in str(caught.value)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'42' | int", 42),
        ("' 42\n' | int", 42),
        ("'4.5' | int", 4),
        ("'0x1A' | int(base=16)", 26),
        ("'junk' | int(default=0)", 0),
        ("'4.5' | float", 4.5),
        ("'junk' | float(default=1.5)", 1.5),
        ("'yes' | bool", True),
        ("'On' | bool", True),
        ("'1' | bool", True),
        ("'no' | bool", False),
        ("'false' | bool", False),
        ("0 | bool", False),
        ("'a b;c' | shell_quote", "'a b;c'"),
        ("{'b': 1, 'a': [1, 2]} | to_json", '{"a": [1, 2], "b": 1}'),
        ("'{\"a\": [1, 2]}' | from_json", {"a": [1, 2]}),
        ("'disk 93% used' | regex_search('(\\\\d+)%', 1)", "93"),
        ("'disk full' | regex_search('\\\\d+')", None),
        ("'DISK' | regex_search('disk', ignorecase=true)", "DISK"),
        ("'a-b-c' | regex_replace('-', '+')", "a+b+c"),
        ("'a1b22' | regex_replace('(\\\\d+)', '<\\\\1>')", "a<1>b<22>"),
        ("'user:pässwörd' | b64encode", base64.b64encode("user:pässwörd".encode()).decode()),
        ("'dXNlcjpw' | b64decode", "user:p"),
        ("'/var/log/syslog.1' | basename", "syslog.1"),
        ("'/var/log/syslog.1' | dirname", "/var/log"),
    ],
)
def test_extra_filters(expression: str, expected: Any) -> None:
    assert evaluate(expression, {}) == expected


# --------------------------------------------------------------------------- render


def test_render_single_expression_is_native() -> None:
    context = make_context()
    assert render("{{ result.stdout | int }}", context) == 42
    assert render("{{ steps.measure.outputs }}", context) == {"percent": 95}
    assert render("{{ result.stdout }}", context) == "42\n"  # no literal_eval guessing


def test_render_text_around_an_expression_gives_a_string() -> None:
    context = make_context()
    assert render("x {{ result.stdout | int }}", context) == "x 42"
    assert render(" {{ 1 }}", context) == " 1"
    assert render("{{ 1 }}{{ 2 }}", context) == "12"


def test_render_keeps_plain_text_and_trailing_newlines() -> None:
    assert render("systemctl restart rsyslog\n", {}) == "systemctl restart rsyslog\n"
    assert render("{{ 'a' }}\n", {}) == "a\n"


def test_render_error_names_the_template() -> None:
    with pytest.raises(ExpressionError, match=r"'inputs\.nope' is undefined in template"):
        render("host {{ inputs.nope }}", make_context())


def test_render_data_renders_nested_strings_without_quoting() -> None:
    data = {
        "days": "{{ inputs.threshold }}",
        "hosts": ["{{ inputs.host }}", "literal", 7],
        "pair": ("{{ run.id }}", None),
        "{{ inputs.host }}_key": {"deep": "x={{ alert.labels.instance }}"},
    }
    assert render_data(data, make_context()) == {
        "days": 90,
        "hosts": ["web1", "literal", 7],
        "pair": ("r-1", None),
        "web1_key": {"deep": f"x={INJECTION}"},
    }


def test_collect_secrets_finds_every_string_under_secrets() -> None:
    context = make_context(secrets={"db": {"password": "p1", "user": "u"}, "api": ["t1"]})
    assert sorted(collect_secrets(context)) == ["p1", "t1", "u"]
    assert collect_secrets({}) == []


# --------------------------------------------------------------------------- render_command


def run_bash(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with bash; output decoded without newline translation."""
    completed = subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, timeout=10, check=False
    )
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8", "surrogateescape"),
        completed.stderr.decode("utf-8", "surrogateescape"),
    )


def test_injection_arrives_as_one_literal_argument(tmp_path: Path) -> None:
    payload = "$(touch pwned); touch pwned2 `touch pwned3` ' \" \\ * ?"
    context = make_context(alert={"labels": {"instance": payload}})
    command = render_command("printf '%s\\n' {{ alert.labels.instance }}", context)
    completed = run_bash(command, tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == payload + "\n"
    assert list(tmp_path.iterdir()) == []


def test_the_documented_injection_string(tmp_path: Path) -> None:
    command = render_command("echo {{ alert.labels.instance }}", make_context())
    assert command == "echo '$(touch /tmp/pwned); rm -rf x'"
    completed = run_bash(command.replace("echo", "printf %s", 1), tmp_path)
    assert completed.stdout == INJECTION
    assert list(tmp_path.iterdir()) == []


NASTY = "a'b\"c $(touch pwned) `touch pwned2` \\ d; touch pwned3 *"


@pytest.mark.parametrize(
    "template",
    [
        "printf '%s|' {{ v }}",
        "printf '%s|' --opt={{ v }}",
        "printf '%s|' pre{{ v }}post",
        "printf '%s|' \"$(printf '%s' {{ v }})\"",
        "x=$(printf '%s' {{ v }}); printf '%s|' \"$x\"",
        "cat <<< {{ v }}",
        "printf '%s|' {{ v }} {# a Jinja comment is not a shell comment #}",
    ],
)
def test_plain_word_values_arrive_literally(template: str, tmp_path: Path) -> None:
    completed = run_bash(render_command(template, {"v": NASTY}), tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert NASTY in completed.stdout
    assert list(tmp_path.iterdir()) == []


INERT = "web-1.prod:8080/x@y=1,2%+"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('printf "%s|" "{{ v }}"', f"{INERT}|"),
        ("printf '%s|' 'pre {{ v }} post'", f"pre {INERT} post|"),
        ("printf '%s|' \"$(printf '%s' \"{{ v }}\")\"", f"{INERT}|"),
        ("sh -c 'printf \"%s|\" {{ v }}'", f"{INERT}|"),
    ],
)
def test_inert_values_may_sit_inside_written_quotes(
    template: str, expected: str, tmp_path: Path
) -> None:
    completed = run_bash(render_command(template, {"v": INERT}), tmp_path)
    assert completed.stdout == expected


@pytest.mark.parametrize(
    "template",
    [
        'echo "{{ v }}"',
        "echo 'x {{ v }}'",
        "sh -c 'echo {{ v }}'",
        'bash -c "echo {{ v }}"',
        'ssh other "rm -rf {{ v }}"',
    ],
)
@pytest.mark.parametrize("value", [NASTY, "a /", "x;y", "*", "~root", "$HOME", "a\nb", "é è"])
def test_other_values_inside_written_quotes_are_refused(template: str, value: str) -> None:
    # the quotes may feed a nested shell (sh -c, ssh, su -c) that would run the value
    with pytest.raises(ExpressionError, match="nested shell"):
        render_command(template, {"v": value})


def test_loop_values_are_quoted_one_by_one(tmp_path: Path) -> None:
    hosts = ["a b", "c;touch pwned", "$(touch pwned2)"]
    command = render_command(
        "{% for h in hosts %}printf '%s|' {{ h }}; {% endfor %}", {"hosts": hosts}
    )
    completed = run_bash(command, tmp_path)
    assert completed.stdout == "a b|c;touch pwned|$(touch pwned2)|"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "template",
    [
        "echo {{ v | safe }}",
        "echo {{ v | shell_quote }}",
        "echo {{ v | string }}",
        "{% autoescape true %}echo {{ v }}{% endautoescape %}",
        "{% filter replace(\"'\", '') %}echo {{ v }}{% endfilter %}",
        "{% filter trim %}echo {{ v }}{% endfilter %}",
    ],
)
def test_no_escape_hatch_bypasses_quoting(template: str, tmp_path: Path) -> None:
    command = render_command(template, {"v": "$(touch pwned)"})
    assert command == "echo '$(touch pwned)'"
    run_bash(command, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_macro_and_block_output_is_one_argument(tmp_path: Path) -> None:
    context = {"v": "$(touch pwned) x"}
    for template in (
        "{% macro m(x) %}ls {{ x }}{% endmacro %}printf %s {{ m(v) }}",
        "{% set y %}ls {{ v }}{% endset %}printf %s {{ y }}",
    ):
        command = render_command(template, context)
        assert command == "printf %s 'ls $(touch pwned) x'"
        assert run_bash(command, tmp_path).stdout == "ls $(touch pwned) x"
    assert list(tmp_path.iterdir()) == []


def test_a_filter_that_rewrites_substituted_values_is_refused() -> None:
    with pytest.raises(ExpressionError, match="a filter changed a substituted value"):
        render_command("{% filter upper %}echo {{ v }}{% endfilter %}", {"v": "x"})


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ("cat <<EOF\n{{ v }}\nEOF", "heredoc"),
        ("cat <<'EOF'\n{{ v }}\nEOF", "heredoc"),
        ("echo hi # {{ v }}", "comment"),
        ("echo $'{{ v }}'", "$'...'"),
        ("echo \\{{ v }}", "backslash"),
        ("echo `echo {{ v }}`", "backticks"),
        ('echo "`echo {{ v }}`"', "backticks"),
        ('echo "\\{{ v }}"', "backslash"),
    ],
)
def test_unquotable_places_are_refused(template: str, where: str) -> None:
    with pytest.raises(ExpressionError, match="cannot shell-quote a value safely") as caught:
        render_command(template, {"v": "x\nrm -rf /"})
    assert where in str(caught.value)


def test_literal_text_is_left_as_written() -> None:
    literal = "df --output=pcent / | tail -1 | tr -dc 0-9 # it's fine"
    assert render_command(literal, {}) == literal
    assert render_command("echo a#{{ v }} $'x' {{ v }}", {"v": "b c"}) == "echo a#'b c' $'x' 'b c'"
    assert render_command("echo {{ 'a b' }} {{ 3 }} {{ '' }}", {}) == "echo 'a b' 3 ''"


def test_command_errors_name_the_command() -> None:
    with pytest.raises(ExpressionError, match=r"'inputs\.nope' is undefined in command"):
        render_command("echo {{ inputs.nope }}", make_context())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))))
def test_any_value_round_trips_through_bash_as_a_plain_word(value: str, tmp_path: Path) -> None:
    template = "printf '%s|' {{ v }} x{{ v }}x \"$(printf '%s' {{ v }})\""
    completed = run_bash(render_command(template, {"v": value}), tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"{value}|x{value}x|{value.rstrip(chr(10))}|"
    assert list(tmp_path.iterdir()) == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.from_regex(r"[\w.,:/@%+=-]*", fullmatch=True))
def test_inert_values_round_trip_inside_quotes(value: str, tmp_path: Path) -> None:
    template = "printf '%s|' \"{{ v }}\" 'x{{ v }}x'"
    completed = run_bash(render_command(template, {"v": value}), tmp_path)
    assert completed.stdout == f"{value}|x{value}x|"


def test_check_command_warns_statically() -> None:
    template = 'echo "done {{ x }}" {{ y }} # {{ c }}\n{% if a %}cat <<EOF\n{{ h }}\nEOF{% endif %}'
    problems = check_command(template)
    assert len(problems) == 3
    assert problems[0].startswith("{{ x }} is inside quotes")
    assert "comment" in problems[1]
    assert "heredoc" in problems[2]
    assert check_command('echo {{ x }} a#{{ y }} "$(cat {{ z }})" {# c #}') == []


def test_a_value_cannot_forge_a_substitution_marker() -> None:
    forged = "\x00" + "0" * 16 + ":0\x00"
    with pytest.raises(ExpressionError, match="NUL byte"):
        render_command("echo {{ v }}", {"v": forged})
