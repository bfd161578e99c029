"""Sandboxed Jinja2 for guards, templates and shell commands (DESIGN.md section 2).

Runbook authors write expressions; alerts and responders supply the values.
This module keeps those two apart:

* everything runs in an ``ImmutableSandboxedEnvironment`` with no loader (no
  include/import/extends, no I/O), ``StrictUndefined`` (a typo is an error, not
  an empty string) and without the ``lipsum``/``cycler``/``joiner`` globals;
* operations that could eat the executor's memory (string repetition, ``%``
  and ``str.format`` widths, ``~`` concatenation, padding methods, ``join``)
  are bounded, so an authoring mistake fails fast instead of killing the run;
* in a shell command a ``{{ }}`` value written as a plain word is
  shell-quoted and arrives as one literal argument; inside quotes written in
  the template only inert values (no spaces or shell characters) are
  accepted, since those quotes often feed a nested shell; nothing is accepted
  where no quoting is safe (heredocs, comments, backticks, ``$'...'``, after a
  backslash). There is no escape hatch: ``| safe``, ``| shell_quote``, macros
  and filter blocks all go through the same check.

Static analysis (:func:`analyze`) parses without executing so validation can
check every name a runbook reads; results are cached by source string because
validation calls it dozens of times per runbook.
"""

from __future__ import annotations

import base64
import contextvars
import difflib
import functools
import json
import posixpath
import re
import secrets as _random
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.filters import do_center, do_indent, do_join, do_replace, do_slice
from jinja2.nodes import EvalContext, Impossible
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment
from jinja2.utils import pass_context, pass_eval_context

from executor.errors import ExpressionError

__all__ = [
    "CONTEXT_NAMES",
    "MAX_ITEMS",
    "MAX_STRING_LENGTH",
    "ExpressionInfo",
    "ExpressionSyntaxError",
    "analyze",
    "check_command",
    "collect_secrets",
    "evaluate",
    "render",
    "render_command",
    "render_data",
]

#: The names a runbook expression may read (DESIGN.md section 2).
CONTEXT_NAMES = frozenset({"inputs", "steps", "result", "run", "alert", "secrets"})

#: Longest string an expression may build (characters). Command output larger
#: than this can still be read and compared, only not grown further.
MAX_STRING_LENGTH = 8 * 1024 * 1024
#: Longest list or tuple an expression may build with ``*`` or ``+``.
MAX_ITEMS = 1024 * 1024
#: Largest exponent size (in bits of the result) ``**`` may produce.
_MAX_POWER_BITS = 65536

_KINDS = ("expression", "template")
_VALUE = "__runbook_value__"
_TEMPLATE_MARKS = ("{{", "{%", "{#")


# --------------------------------------------------------------------------- errors


class ExpressionSyntaxError(ExpressionError):
    """An expression or template does not parse, or names an unknown filter/test.

    ``message`` is in human words ("unexpected '}' in expression"), ``lineno``
    is the 1-based line inside the expression source, so validation can point
    at ``file:line`` by adding it to the line where the string starts.
    """

    def __init__(self, message: str, *, lineno: int, source: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.lineno = lineno
        self.source = source


class _UnquotablePlace(Exception):
    """A command puts a ``{{ }}`` value where no shell quoting is safe."""


def _refuse(message: str) -> SecurityError:
    """A sandbox limit was hit; the wrapper turns this into an ExpressionError."""
    return SecurityError(message)


# --------------------------------------------------------------------------- limits


def _check_length(size: int, what: str = "string") -> None:
    limit = MAX_STRING_LENGTH if what == "string" else MAX_ITEMS
    if size > limit:
        raise _refuse(
            f"the expression would build a {what} of {size} "
            f"{'characters' if what == 'string' else 'items'}, more than the sandbox "
            f"limit of {limit}"
        )


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_FORMAT_FIELD = re.compile(r"\{[^{}]*\}")
_NESTED_FORMAT_FIELD = re.compile(r"\{[^{}]*\{")


def _ints(values: Iterable[Any]) -> Iterator[int]:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            yield abs(value)


def _check_printf(fmt: str, args: Any) -> None:
    """Refuse ``'%999999999s' % x`` before Python allocates the padding."""
    star = False
    for spec in _PRINTF_SPEC.finditer(fmt):
        for width in spec.groups():
            if width == "*":
                star = True
            elif width:
                _check_length(int(width))
    if star:
        values = args if isinstance(args, tuple) else (args,)
        for number in _ints(values):
            _check_length(number)


def _check_format(fmt: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse ``'{:>999999999}'.format(x)`` (literal or nested widths)."""
    for match in _FORMAT_FIELD.finditer(fmt):
        spec = match.group(0).partition(":")[2]
        for digits in re.findall(r"\d+", spec):
            _check_length(int(digits))
    if _NESTED_FORMAT_FIELD.search(fmt):
        for number in _ints([*args, *kwargs.values()]):
            _check_length(number)


def _bounded_power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 0:
        bits = right * max(abs(left), 1).bit_length()
        if bits > _MAX_POWER_BITS:
            raise _refuse(f"{left} ** {right} is too large for the sandbox")
    return left**right


def _bounded_multiply(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            what = "string" if isinstance(seq, str) else "list"
            _check_length(len(seq) * max(count, 0), what)
    return left * right


def _bounded_add(left: Any, right: Any) -> Any:
    if isinstance(left, str) and isinstance(right, str):
        _check_length(len(left) + len(right))
    elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
        _check_length(len(left) + len(right), "list")
    return left + right


def _bounded_modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_printf(left, right)
    return left % right


def _bounded_join(pieces: Iterable[Any]) -> str:
    """``"".join`` that stops as soon as the output would pass the limit."""
    parts: list[str] = []
    size = 0
    for piece in pieces:
        text = str(piece)
        size += len(text)
        _check_length(size)
        parts.append(text)
    return "".join(parts)


_STR_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _bounded_call_args(
    obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Check the str methods whose output can be far larger than their input."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, str):
        return args, kwargs
    name = getattr(target, "__name__", "")
    if name in _STR_WIDTH_METHODS:
        for number in _ints([*args[:1], *kwargs.values()]):
            _check_length(number)
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            _check_length(len(owner) * max(tabsize, 1))
    elif name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = owner.count(old) if old else len(owner) + 1
        _check_length(len(owner) + count * max(len(new) - len(old), 0))
    elif name == "join" and args:
        items = list(args[0])  # may be a generator: read it once, pass the list on
        text_size = sum(len(item) for item in items if isinstance(item, str))
        _check_length(text_size + len(owner) * max(len(items) - 1, 0))
        args = (items, *args[1:])
    elif name in {"format", "format_map"}:
        mapping = args[0] if name == "format_map" and args else kwargs
        positional = () if name == "format_map" else args
        _check_format(owner, positional, mapping if isinstance(mapping, Mapping) else {})
    return args, kwargs


# --------------------------------------------------------------------------- filters

_NO_DEFAULT: Any = object()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _to_int(value: Any, default: Any = _NO_DEFAULT, base: int = 10) -> int:
    """Like Jinja's ``int`` but an unreadable value is an error, not a silent 0.

    A guard such as ``result.stdout | int < 90`` must not pass because the
    command printed an error message; pass ``default=`` when 0 is really meant.
    """
    try:
        if isinstance(value, str) and base != 10:
            return int(value, base)
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError, OverflowError):
            pass
    if default is _NO_DEFAULT:
        raise ValueError(
            f"cannot read {_short(value)} as an integer "
            "(use '| int(default=0)' if a fallback is intended)"
        )
    return default


def _to_float(value: Any, default: Any = _NO_DEFAULT) -> float:
    """Like Jinja's ``float`` but an unreadable value is an error (see ``_to_int``)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        if default is _NO_DEFAULT:
            raise ValueError(
                f"cannot read {_short(value)} as a number "
                "(use '| float(default=0.0)' if a fallback is intended)"
            ) from None
        return default


_TRUE_WORDS = frozenset({"yes", "y", "true", "t", "on", "1"})


def _to_bool(value: Any) -> bool:
    """Ansible-like truthiness: "yes"/"true"/"on"/"1" are true, other strings false."""
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_WORDS
    return bool(value)


def _shell_quote(value: Any) -> str:
    return shlex.quote(str(value))


def _to_json(value: Any, indent: int | None = None, sort_keys: bool = True) -> str:
    return json.dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=False)


def _from_json(value: str) -> Any:
    return json.loads(value)


def _regex_flags(ignorecase: bool, multiline: bool) -> int:
    return (re.IGNORECASE if ignorecase else 0) | (re.MULTILINE if multiline else 0)


def _regex_search(
    value: Any,
    pattern: str,
    group: int | str = 0,
    ignorecase: bool = False,
    multiline: bool = False,
) -> str | None:
    """First match (or its ``group``) of ``pattern`` in ``value``, else None."""
    match = re.search(pattern, str(value), _regex_flags(ignorecase, multiline))
    return None if match is None else match.group(group)


def _regex_replace(
    value: Any,
    pattern: str,
    replacement: str = "",
    ignorecase: bool = False,
    multiline: bool = False,
    count: int = 0,
) -> str:
    """``re.sub`` that refuses to grow the text past the sandbox limit.

    Small inputs and literal replacements are checked up front (counting
    matches runs at C speed); only a large input with group references pays
    for the exact per-match check.
    """
    text = str(value)
    regex = re.compile(pattern, _regex_flags(ignorecase, multiline))
    if len(text) + (len(text) + 1) * len(replacement) <= MAX_STRING_LENGTH:
        return regex.sub(replacement, text, count=count)
    if "\\" not in replacement:
        matches = sum(1 for _ in regex.finditer(text))
        if count > 0:
            matches = min(matches, count)
        _check_length(len(text) + matches * len(replacement))
        return regex.sub(replacement, text, count=count)
    grown = 0

    def substitute(match: re.Match[str]) -> str:
        nonlocal grown
        piece = match.expand(replacement)
        grown += len(piece) - (match.end() - match.start())
        _check_length(len(text) + grown)
        return piece

    return regex.sub(substitute, text, count=count)


def _b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: Any) -> str:
    return base64.b64decode(str(value), validate=True).decode("utf-8")


def _center(value: Any, width: int = 80) -> str:
    _check_length(width)
    return do_center(value, width)


def _indent(value: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(value)
    pad = width if isinstance(width, str) else " " * min(max(width, 0), MAX_STRING_LENGTH + 1)
    _check_length(len(text) + (text.count("\n") + 1) * len(pad))
    return do_indent(text, width, first, blank)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if attribute is None:
        sizes = sum(len(str(item)) for item in items)
        _check_length(sizes + len(d) * max(len(items) - 1, 0))
    result = do_join(eval_ctx, items, d, attribute)
    _check_length(len(result))
    return result


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    text = str(s)
    occurrences = text.count(str(old)) if old else len(text) + 1
    if count is not None and count >= 0:
        occurrences = min(occurrences, count)
    _check_length(len(text) + occurrences * max(len(str(new)) - len(str(old)), 0))
    return do_replace(eval_ctx, s, old, new, count)


def _slice(value: Iterable[Any], slices: int, fill_with: Any = None) -> list[list[Any]]:
    _check_length(slices, "list")
    return list(do_slice(value, slices, fill_with))


def _format(value: str, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise TypeError("format takes positional or keyword arguments, not both")
    operands: Any = kwargs or args
    _check_printf(str(value), operands)
    return str(value) % operands


_EXTRA_FILTERS: dict[str, Callable[..., Any]] = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "shell_quote": _shell_quote,
    "to_json": _to_json,
    "from_json": _from_json,
    "regex_search": _regex_search,
    "regex_replace": _regex_replace,
    "b64encode": _b64encode,
    "b64decode": _b64decode,
    "basename": lambda value: posixpath.basename(str(value)),
    "dirname": lambda value: posixpath.dirname(str(value)),
    # bounded replacements of Jinja's own filters
    "center": _center,
    "indent": _indent,
    "join": _join,
    "replace": _replace,
    "slice": _slice,
    "format": _format,
}


# --------------------------------------------------------------------------- environments


class _BoundedCodeGenerator(CodeGenerator):
    """Route ``a ~ b`` through the environment so its size can be checked."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _RunbookSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox plus size limits on everything that can grow."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    concat = staticmethod(_bounded_join)  # set blocks, macros, filter blocks

    def __init__(self, **options: Any) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            **options,
        )
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)
        self.filters.update(_EXTRA_FILTERS)
        self.binop_table.update(
            {"*": _bounded_multiply, "**": _bounded_power, "+": _bounded_add, "%": _bounded_modulo}
        )

    @staticmethod
    def bounded_concat(pieces: Iterable[Any]) -> str:
        return _bounded_join(pieces)

    def call(
        __self,  # same signature as SandboxedEnvironment.call
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        args, kwargs = _bounded_call_args(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


_ENV = _RunbookSandbox()


@dataclass
class _ShellValues:
    """The values substituted during one ``render_command`` call."""

    token: str = field(default_factory=lambda: _random.token_hex(8))
    values: list[Any] = field(default_factory=list)


_SHELL_VALUES: contextvars.ContextVar[_ShellValues | None] = contextvars.ContextVar(
    "runbook_shell_values", default=None
)


@pass_context
def _mark_for_shell(_context: Context, value: Any) -> str:
    """Replace a ``{{ }}`` value by an unforgeable marker, quoted after rendering.

    ``pass_context`` also keeps Jinja from applying this at compile time to
    constant outputs, so ``{{ 'a b' }}`` is quoted like any other value.
    """
    collected = _SHELL_VALUES.get()
    if collected is None:
        raise _refuse("command templates can only be rendered through render_command")
    collected.values.append(value)
    return f"\x00{collected.token}:{len(collected.values) - 1}\x00"


_CMD_ENV = _RunbookSandbox(finalize=_mark_for_shell)
# Every substitution is quoted already; explicit quoting must not double it.
_CMD_ENV.filters["shell_quote"] = lambda value: value


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class ExpressionInfo:
    """What validation needs to know about one expression or template.

    ``references``: the name paths read from the context, e.g.
    ``("steps", "measure", "outputs", "percent")``; environment globals
    (``range``, ``dict``, ``namespace``) and names bound inside the template
    are not references. ``constant``: ``(True, value)`` when the result is known
    without any context, else ``(False, None)``. Treat ``value`` as read-only:
    the object is cached and shared.
    """

    references: frozenset[tuple[str, ...]]
    constant: tuple[bool, Any]


def _syntax_error(exc: TemplateSyntaxError, source: str, kind: str) -> ExpressionSyntaxError:
    message = (exc.message or "invalid syntax").rstrip(".").replace("'end of template'", "end")
    message = message.replace("end of template", "end")
    if message.lower().startswith("unexpected end"):
        message = message.replace("end", f"end of the {kind}", 1)
    elif message.startswith("unexpected"):
        message = f"{message} in {kind}"
    return ExpressionSyntaxError(message, lineno=exc.lineno or 1, source=source)


def _parse_expression(source: str) -> nodes.Expr:
    try:
        parser = Parser(_ENV, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise ExpressionSyntaxError(
                f"unexpected {token.value!r} after the end of the expression",
                lineno=token.lineno,
                source=source,
                hint="a guard is one expression; join conditions with 'and' / 'or'",
            )
    except TemplateSyntaxError as exc:
        error = _syntax_error(exc, source, "expression")
        if "{{" in source:
            error.hint = "a guard is a bare expression: write 'x > 1', not '{{ x > 1 }}'"
        raise error from None
    return expr


def _parse_template(source: str) -> nodes.Template:
    try:
        return _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, source, "template") from None


def _unknown(kind: str, name: str, known: Iterable[str], lineno: int, source: str) -> Exception:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"known {kind}s: {', '.join(sorted(known))}"
    return ExpressionSyntaxError(
        f"unknown {kind} '{name}'", lineno=lineno, source=source, hint=hint
    )


def _path_of(node: nodes.Node) -> tuple[nodes.Node, tuple[str, ...]]:
    """Split ``a.b["c"]`` into its base node and the constant path after it."""
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            parts.append(node.arg.value)
            node = node.node
        else:
            return node, tuple(reversed(parts))


def _stored_names(target: nodes.Node) -> set[str]:
    names = [target, *target.find_all(nodes.Name)]  # find_all skips the node itself
    return {n.name for n in names if isinstance(n, nodes.Name) and n.ctx in ("store", "param")}


class _ReferenceCollector:
    """Walk a parsed template, recording free name paths and checking filters.

    Scoping follows Jinja: loop targets and ``loop`` exist inside the loop,
    macro parameters inside the macro, ``{% set %}`` from that point on in
    the current scope.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.references: set[tuple[str, ...]] = set()

    def visit(self, node: nodes.Node, bound: set[str]) -> None:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is not None:
            method(node, bound)
        else:
            self.visit_children(node, bound)

    def visit_children(self, node: nodes.Node, bound: set[str]) -> None:
        for child in node.iter_child_nodes():
            self.visit(child, bound)

    def visit_all(self, items: Iterable[nodes.Node], bound: set[str]) -> None:
        for item in items:
            self.visit(item, bound)

    def record(self, base: nodes.Node, path: tuple[str, ...], bound: set[str]) -> None:
        if isinstance(base, nodes.Name):
            if base.ctx == "load" and base.name not in bound and base.name not in _ENV.globals:
                self.references.add((base.name, *path))
        else:
            self.visit(base, bound)

    def visit_Name(self, node: nodes.Name, bound: set[str]) -> None:
        self.record(node, (), bound)

    def visit_Getattr(self, node: nodes.Getattr, bound: set[str]) -> None:
        base, path = _path_of(node)
        self.record(base, path, bound)
        if isinstance(base, nodes.Getitem):  # a.b[expr].c: the subscript is read too
            self.visit(base.arg, bound)

    def visit_Getitem(self, node: nodes.Getitem, bound: set[str]) -> None:
        base, path = _path_of(node)
        if base is node:  # non-constant subscript: the path stops before it
            self.visit(node.node, bound)
            self.visit(node.arg, bound)
        else:
            self.record(base, path, bound)
            if isinstance(base, nodes.Getitem):
                self.visit(base.arg, bound)

    def visit_Call(self, node: nodes.Call, bound: set[str]) -> None:
        # inputs.host.upper(): the method name is not part of the data path
        callee = node.node.node if isinstance(node.node, nodes.Getattr) else node.node
        self.visit(callee, bound)
        self.visit_all([*node.args, *node.kwargs], bound)
        self.visit_all([n for n in (node.dyn_args, node.dyn_kwargs) if n is not None], bound)

    def visit_Filter(self, node: nodes.Filter, bound: set[str]) -> None:
        if node.name not in _ENV.filters:
            raise _unknown("filter", node.name, _ENV.filters, node.lineno, self.source)
        self.visit_children(node, bound)

    def visit_Test(self, node: nodes.Test, bound: set[str]) -> None:
        if node.name not in _ENV.tests:
            raise _unknown("test", node.name, _ENV.tests, node.lineno, self.source)
        self.visit_children(node, bound)

    def visit_Assign(self, node: nodes.Assign, bound: set[str]) -> None:
        self.visit(node.node, bound)
        self.visit_target(node.target, bound)
        bound |= _stored_names(node.target)

    def visit_AssignBlock(self, node: nodes.AssignBlock, bound: set[str]) -> None:
        self.visit_all(node.body, set(bound))
        if node.filter is not None:
            self.visit(node.filter, bound)
        self.visit_target(node.target, bound)
        bound |= _stored_names(node.target)

    def visit_target(self, target: nodes.Node, bound: set[str]) -> None:
        for ref in [target, *target.find_all(nodes.NSRef)]:
            if not isinstance(ref, nodes.NSRef):
                continue
            if ref.name not in bound:
                self.references.add((ref.name,))

    def visit_For(self, node: nodes.For, bound: set[str]) -> None:
        self.visit(node.iter, bound)
        inner = bound | _stored_names(node.target) | {"loop"}
        if node.test is not None:
            self.visit(node.test, set(inner))
        self.visit_all(node.body, inner)
        self.visit_all(node.else_, set(bound))

    def visit_Macro(self, node: nodes.Macro, bound: set[str]) -> None:
        self.visit_all(node.defaults, bound)
        bound.add(node.name)
        inner = bound | {a.name for a in node.args} | {"varargs", "kwargs", "caller"}
        self.visit_all(node.body, inner)

    def visit_CallBlock(self, node: nodes.CallBlock, bound: set[str]) -> None:
        self.visit(node.call, bound)
        self.visit_all(node.defaults, bound)
        inner = bound | {a.name for a in node.args} | {"varargs", "kwargs"}
        self.visit_all(node.body, inner)

    def visit_With(self, node: nodes.With, bound: set[str]) -> None:
        self.visit_all(node.values, bound)
        inner = set(bound)
        for target in node.targets:
            inner |= _stored_names(target)
        self.visit_all(node.body, inner)


def _expression_constant(expr: nodes.Expr) -> tuple[bool, Any]:
    try:
        return True, expr.as_const(EvalContext(_ENV))
    except Impossible:
        return False, None
    except Exception:  # folding hit a runtime error (1/0, bad filter input)
        return False, None


def _single_output(template: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is exactly ``{{ expr }}``, else None."""
    if len(template.body) == 1 and isinstance(template.body[0], nodes.Output):
        parts = template.body[0].nodes
        if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData):
            return parts[0]
    return None


def _template_constant(template: nodes.Template) -> tuple[bool, Any]:
    single = _single_output(template)
    if single is not None:
        return _expression_constant(single)
    pieces: list[str] = []
    for statement in template.body:
        if not isinstance(statement, nodes.Output):
            return False, None
        for part in statement.nodes:
            known, value = _expression_constant(part)
            if not known:
                return False, None
            pieces.append(str(value))
    return True, "".join(pieces)


_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_SIMPLE_EXPRESSION = re.compile(rf"\s*({_IDENT}(?:\.{_IDENT})*)\s*((?:\|\s*{_IDENT}\s*)*)")
_OUTPUT_BLOCK = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_JINJA_WORDS = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if"}
)


def _simple_reference(text: str) -> tuple[str, ...] | None:
    """The path of ``a.b.c | f | g`` with known filters, else None (use the parser).

    A shortcut for the shapes most runbook strings have: parsing with Jinja
    costs ~0.2 ms, and validation analyzes dozens of strings per runbook.
    """
    match = _SIMPLE_EXPRESSION.fullmatch(text)
    if match is None:
        return None
    path = tuple(match.group(1).split("."))
    filters = [name.strip() for name in match.group(2).split("|")[1:]]
    if path[0] in _JINJA_WORDS or path[0] in _ENV.globals:
        return None
    if not all(name in _ENV.filters for name in filters):
        return None
    return path


def _simple_references(source: str, kind: str) -> frozenset[tuple[str, ...]] | None:
    """References of a guard or template made only of simple paths, else None."""
    if kind == "expression":
        path = _simple_reference(source)
        return None if path is None else frozenset([path])
    found: set[tuple[str, ...]] = set()
    for block in _OUTPUT_BLOCK.findall(source):
        path = _simple_reference(block)
        if path is None:
            return None
        found.add(path)
    if not _is_plain_text(_OUTPUT_BLOCK.sub("", source)):
        return None
    return frozenset(found)


def _is_plain_text(source: str) -> bool:
    return not any(mark in source for mark in _TEMPLATE_MARKS)


@functools.lru_cache(maxsize=8192)
def analyze(source: str, *, kind: str) -> ExpressionInfo:
    """Parse ``source`` (never execute it) and report what it reads.

    ``kind="expression"`` for bare guards (``when``, ``assert.that``,
    ``retries.until``); ``kind="template"`` for strings that may hold
    ``{{ }}``/``{% %}``. Raises :class:`ExpressionSyntaxError` for a parse
    error or an unknown filter/test.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
    if kind == "template" and _is_plain_text(source):
        return ExpressionInfo(frozenset(), (True, source))
    simple = _simple_references(source, kind)
    if simple:
        return ExpressionInfo(simple, (False, None))
    tree: nodes.Node = (
        _parse_expression(source) if kind == "expression" else _parse_template(source)
    )
    collector = _ReferenceCollector(source)
    collector.visit(tree, set())
    references = frozenset(collector.references)
    constant: tuple[bool, Any] = (False, None)
    if not references:
        if isinstance(tree, nodes.Template):
            constant = _template_constant(tree)
        else:
            constant = _expression_constant(tree)
    return ExpressionInfo(references, constant)


# --------------------------------------------------------------------------- runtime


def _expression_template(env: _RunbookSandbox, expr: nodes.Expr) -> Any:
    """Compile ``expr`` so that running it stores its native value in the context."""
    body = [nodes.Assign(nodes.Name(_VALUE, "store"), expr, lineno=expr.lineno or 1)]
    tree = nodes.Template(body, lineno=1)
    tree.set_environment(env)
    return env.from_string(tree)


@functools.lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> Any:
    return _expression_template(_ENV, _parse_expression(source))


@functools.lru_cache(maxsize=4096)
def _compiled_template(source: str) -> tuple[bool, Any]:
    """(True, expression template) for exactly ``{{ expr }}``, else (False, template)."""
    single = _single_output(_parse_template(source))
    if single is not None:
        return True, _expression_template(_ENV, single)
    return False, _ENV.from_string(source)


@functools.lru_cache(maxsize=4096)
def _compiled_command(source: str) -> Any:
    return _CMD_ENV.from_string(source)


def _resolve(value: Any, part: str) -> tuple[bool, Any]:
    if isinstance(value, Mapping):
        return (True, value[part]) if part in value else (False, None)
    if part.startswith("_") or not hasattr(value, part):
        return False, None
    return True, getattr(value, part)


def _missing_path(source: str, kind: str, context: Mapping[str, Any], detail: str) -> str | None:
    """The first referenced path that does not resolve, preferring Jinja's culprit."""
    try:
        references = analyze(source, kind=kind).references
    except ExpressionError:
        return None
    missing: list[str] = []
    for path in sorted(references):
        value: Any = context
        for depth, part in enumerate(path):
            found, value = _resolve(value, part)
            if not found:
                missing.append(".".join(path[: depth + 1]))
                break
    for name in missing:
        if f"'{name.rsplit('.', 1)[-1]}'" in detail:
            return name
    return missing[0] if missing else None


def _where(source: str, label: str) -> str:
    shown = source if len(source) <= 200 else source[:197] + "..."
    return f"in {label} {shown!r}"


def _runtime_error(
    exc: Exception, source: str, label: str, context: Mapping[str, Any]
) -> ExpressionError:
    where = _where(source, label)
    if isinstance(exc, UndefinedError):
        name = _missing_path(source, _analysis_kind(label), context, str(exc))
        if name is not None:
            return ExpressionError(
                f"'{name}' is undefined {where}",
                hint="check the spelling, that the step ran before this one (needs:), "
                "and that it declares this output",
            )
        return ExpressionError(f"{exc} {where}")
    if isinstance(exc, OverflowError) and "MAX_RANGE" in str(exc):
        exc = SecurityError(f"range() is limited to {MAX_RANGE} items")
    if isinstance(exc, _UnquotablePlace):
        return ExpressionError(
            f"cannot shell-quote a value safely {where}: {exc}",
            hint="a '{{ }}' written as a plain word of the command (cmd --opt {{ x }}) "
            "takes any value safely",
        )
    if isinstance(exc, SecurityError):
        return ExpressionError(
            f"refused by the expression sandbox {where}: {exc}",
            hint="runbook expressions may read data, not Python internals; "
            "keep generated strings and lists small",
        )
    if isinstance(exc, TemplateError):
        return ExpressionError(f"{exc.message or exc} {where}")
    return ExpressionError(f"{type(exc).__name__}: {exc} {where}")


def _analysis_kind(label: str) -> str:
    return "expression" if label == "expression" else "template"


def _check_names(source: str, label: str, context: Mapping[str, Any]) -> None:
    """Refuse names that are neither in the context nor globals (e.g. ``self``)."""
    for path in analyze(source, kind=_analysis_kind(label)).references:
        if path[0] not in context:
            raise ExpressionError(
                f"'{path[0]}' is undefined {_where(source, label)}",
                hint=f"expressions can read: {', '.join(sorted(CONTEXT_NAMES))}",
            )


def _run(template: Any, context: Mapping[str, Any], *, native: bool) -> Any:
    jinja_context = template.new_context(dict(context))
    output = _bounded_join(template.root_render_func(jinja_context))
    if not native:
        return output
    value = jinja_context.vars[_VALUE]
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def _guarded(source: str, label: str, context: Mapping[str, Any], action: Callable[[], Any]) -> Any:
    """Run ``action`` and turn whatever it raises into one ExpressionError for a person."""
    _check_names(source, label, context)
    try:
        return action()
    except ExpressionError:
        raise
    except Exception as exc:  # filters and operators raise anything; the user gets one error
        raise _runtime_error(exc, source, label, context) from None


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a bare guard or assertion and return its native Python value."""
    return _guarded(
        expression,
        "expression",
        context,
        lambda: _run(_compiled_expression(expression), context, native=True),
    )


def render(template: str, context: Mapping[str, Any]) -> Any:
    """Render an output or message template.

    Exactly ``{{ expr }}`` (nothing around it) gives the native value, so
    ``"{{ result.stdout | int }}"`` is the int 42; anything else gives a str.
    """
    if _is_plain_text(template):
        return template

    def run() -> Any:
        single, compiled = _compiled_template(template)
        return _run(compiled, context, native=single)

    return _guarded(template, "template", context, run)


def render_data(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside a nested structure (ansible extravars, http bodies).

    Values are rendered with :func:`render` (native for a lone ``{{ }}``),
    dict keys as text; nothing is shell-quoted: the receiver gets data.
    """
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {
            (str(render(k, context)) if isinstance(k, str) else k): render_data(v, context)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(render_data(item, context) for item in value)
    return value


def render_command(template: str, context: Mapping[str, Any]) -> str:
    """Render a shell command in which no ``{{ }}`` value can become code.

    A value written as a plain word gets ``shlex.quote`` and arrives as one
    literal argument, whatever it holds. Inside quotes written in the template
    ('...' or "...") a value is accepted only if it is inert (letters, digits,
    ``_.,:/@%+=-``): those quotes often feed a nested shell (``sh -c '...'``,
    ``ssh host "..."``) that would re-read anything else. A value is refused
    in heredocs, comments, backticks, ``$'...'`` and right after a backslash.
    Values inside ``{% for %}`` loops, macros, ``{% set %}`` blocks and filter
    blocks are handled the same way (a macro's or block's output is one
    argument); ``| safe`` and ``| shell_quote`` cannot bypass it. Literal text
    of the template is left as written. See :func:`check_command` for a
    static warning at validation time.

    The guarantee covers the shell that runs the command. A plain-word value
    that the command itself hands to another shell (``ssh host cmd {{ x }}``,
    ``eval``) is re-read there; pass such values as positional arguments.
    """
    if "{" not in template:
        return template

    def run() -> str:
        collected = _ShellValues()
        token = _SHELL_VALUES.set(collected)
        try:
            rendered = _run(_compiled_command(template), context, native=False)
        finally:
            _SHELL_VALUES.reset(token)
        return _quote_markers(rendered, collected)

    return _guarded(template, "command", context, run)


def collect_secrets(context: Mapping[str, Any]) -> list[str]:
    """Every string under ``context["secrets"]``, for a Masker before output is shown."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    walk(context.get("secrets", {}))
    return found


# --------------------------------------------------------------------------- shell quoting

_WORD_START = frozenset(" \t\n;&|()<>`")


class _ShellScanner:
    """Tracks the shell quoting context across the literal text of a command.

    Enough of POSIX sh/bash to know whether a substituted value lands in a
    bare word, '...', "...", ``$(...)``/backticks (fresh context), a comment,
    ``$'...'`` or after a heredoc operator.
    """

    def __init__(self) -> None:
        self.mode = "plain"  # plain | single | double | ansi | comment
        self.escaped = False
        self.heredoc = False
        self.previous = ""
        self.stack: list[tuple[str, str, int]] = []  # (mode to return to, closer, parens)
        self.parens = 0

    def feed(self, text: str) -> None:
        index = 0
        while index < len(text):
            index = self._step(text, index)

    def _open(self, closer: str) -> None:
        self.stack.append((self.mode, closer, self.parens))
        self.mode, self.parens, self.previous = "plain", 0, ""

    def _close(self) -> None:
        self.mode, _closer, self.parens = self.stack.pop()
        self.previous = "x"

    def _step(self, text: str, index: int) -> int:
        char = text[index]
        ahead = text[index + 1 : index + 3]
        if self.escaped:
            self.escaped, self.previous = False, "x"
            return index + 1
        mode = self.mode
        if mode == "comment":
            if char == "\n":
                self.mode, self.previous = "plain", "\n"
        elif mode == "single":
            if char == "'":
                self.mode = "plain"
        elif mode == "ansi":
            if char == "\\":
                self.escaped = True
            elif char == "'":
                self.mode = "plain"
        elif mode == "double":
            return self._step_double(char, ahead, index)
        else:
            return self._step_plain(char, ahead, index)
        return index + 1

    def _step_double(self, char: str, ahead: str, index: int) -> int:
        if char == "\\":
            self.escaped = True
        elif char == '"':
            self.mode, self.previous = "plain", "x"
        elif char == "$" and ahead[:1] == "(":
            self._open(")")
            return index + 2
        elif char == "`":
            self._open("`")
        return index + 1

    def _step_plain(self, char: str, ahead: str, index: int) -> int:
        previous, self.previous = self.previous, char
        if char == "\\":
            self.escaped = True
        elif char == "$" and ahead[:1] == "'":
            self.mode = "ansi"
            return index + 2
        elif char == "$" and ahead[:1] == "(":
            self._open(")")
            return index + 2
        elif char == "'":
            self.mode = "single"
        elif char == '"':
            self.mode = "double"
        elif char == "#" and (previous == "" or previous in _WORD_START):
            self.mode = "comment"
        elif char == "<" and ahead[:1] == "<":
            if ahead[1:2] == "<":  # here-string: the next word is an ordinary word
                return index + 3
            self.heredoc = True
            return index + 2
        elif char == "(":
            self.parens += 1
        elif char == ")":
            if self.parens:
                self.parens -= 1
            elif self.stack and self.stack[-1][1] == ")":
                self._close()
        elif char == "`" and self.stack and self.stack[-1][1] == "`" and not self.parens:
            self._close()
        elif char == "`":
            self._open("`")
        return index + 1

    def place(self) -> str:
        """Where a value substituted now would land (a key of ``_PLACES``)."""
        if self.escaped:
            return "backslash"
        if any(closer == "`" for _mode, closer, _parens in self.stack):
            return "backticks"
        if self.heredoc:
            return "heredoc"
        return self.mode

    def quote(self, value: str) -> str:
        """Quote ``value`` for the current position, or refuse."""
        place = self.place()
        if place == "plain":
            self.previous = "x"
            return shlex.quote(value)
        if place in ("single", "double") and _INERT_VALUE.fullmatch(value):
            return value
        raise _UnquotablePlace(_PLACES[place])


#: Values that mean the same to every shell layer: no spaces, quotes, globs,
#: expansions or separators. Only these may sit inside quotes written in the
#: template, because a nested shell (sh -c '...', ssh host "...", su -c) would
#: re-read anything else.
_INERT_VALUE = re.compile(r"[\w.,:/@%+=-]*")

_PLACES = {
    "backslash": "a '{{ }}' value right after a backslash",
    # a backtick inside the value would end `...` whatever the quoting
    "backticks": "a '{{ }}' value inside backticks; use $(...) instead",
    "heredoc": "a '{{ }}' value after a heredoc ('<<'); pass it as an argument instead, "
    "e.g. printf '%s\\n' {{ value }} | cmd",
    "comment": "a '{{ }}' value inside a comment",
    "ansi": "a '{{ }}' value inside $'...'",
    "single": "a value with spaces or shell characters inside '...' written in the command, "
    "where a nested shell (sh -c, ssh, su -c) would run it; write the '{{ }}' outside "
    "the quotes (it is quoted for you) or pass it as an argument: sh -c '... \"$1\"' _ {{ x }}",
    "double": 'a value with spaces or shell characters inside "..." written in the command, '
    "where a nested shell (sh -c, ssh, su -c) would run it; write the '{{ }}' outside "
    "the quotes (it is quoted for you) or pass it as an argument: sh -c '... \"$1\"' _ {{ x }}",
}

_JINJA_BLOCK = re.compile(r"(\{\{.*?\}\})|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def check_command(template: str) -> list[str]:
    """Static lint of a command template: ``{{ }}`` placed where values may be refused.

    Reads the template text (branches and loops are taken as written), so
    validation/lint can warn before run time. Inside quotes only values made of
    letters, digits and ``_.,:/@%+=-`` are accepted at run time; in heredocs,
    comments, backticks, ``$'...'`` or after a backslash nothing is.
    """
    scanner = _ShellScanner()
    problems: list[str] = []
    position = 0
    for match in _JINJA_BLOCK.finditer(template):
        scanner.feed(template[position : match.start()])
        position = match.end()
        if match.group(1) is None:
            continue
        place = scanner.place()
        if place == "plain":
            scanner.previous = "x"
        elif place in ("single", "double"):
            problems.append(f"{match.group(1)} is inside quotes: {_PLACES[place]}")
        else:
            problems.append(f"{match.group(1)}: {_PLACES[place]}")
    return problems


#: One compiled pattern for every render; the per-render token is compared
#: after matching, so a value that imitates a marker is never taken for one.
_MARKER = re.compile("\x00([0-9a-f]{16}):(\\d+)\x00")


def _raw_value(collected: _ShellValues, index: int, depth: int = 0) -> str:
    """The text of value ``index`` (None is empty) with inner values' markers put back raw."""
    if depth > 50:
        raise _refuse("values nested too deeply in the command template")
    value = collected.values[index]
    text = "" if value is None else str(value)

    def inner(match: re.Match[str]) -> str:
        if match.group(1) != collected.token:
            return match.group(0)
        return _raw_value(collected, int(match.group(2)), depth + 1)

    text = _MARKER.sub(inner, text)
    if "\x00" in text:
        raise _refuse("a value for a shell command contains a NUL byte")
    return text


def _quote_markers(rendered: str, collected: _ShellValues) -> str:
    scanner = _ShellScanner()
    out: list[str] = []
    position = 0
    for match in _MARKER.finditer(rendered):
        if match.group(1) != collected.token:
            continue
        literal = rendered[position : match.start()]
        scanner.feed(literal)
        out.append(literal)
        out.append(scanner.quote(_raw_value(collected, int(match.group(2)))))
        position = match.end()
    out.append(rendered[position:])
    result = "".join(out)
    if "\x00" in result:  # quoted values never hold NUL, so a marker was altered
        raise _refuse(
            "a filter changed a substituted value inside the command; "
            "apply filters inside '{{ }}', not around it"
        )
    return result
