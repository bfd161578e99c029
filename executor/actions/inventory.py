"""Resolve a target's host pattern with ansible-core's own inventory code.

A runbook's ``targets`` are Ansible host patterns (``web``, ``web1``,
``web:&eu:!web3``, ``web[0:1]``, ``*``, ``db1,web2``), and the SSH and Ansible
steps of one run must agree on what they mean. So patterns are not
re-implemented here: ansible-core's ``InventoryManager`` parses the inventory
(INI, YAML, a directory, with ``host_vars``/``group_vars``) and resolves them,
exactly as ``ansible -i INVENTORY PATTERN`` would.

Two deliberate differences from the ``ansible`` command, both for safety:
- Ansible's *implicit* localhost (``localhost`` when no such host is in the
  inventory) is never returned: a target may be templated from alert labels,
  and the executor's own machine is not a host to touch by accident;
- patterns are checked against the pattern language first, and regular
  expressions (``~...``) and anything else (quotes, ``$``, ``;``, ``{{``) are
  refused, for the same reason.

Building the manager costs the import of ansible (about half a second) and
the parse, so it happens once per instance, lazily, and again only when the
inventory file changes (for a directory: when an entry is added or removed).
Ansible's own warnings (an unmatched pattern, an unparsable source) are
captured, not printed, where ansible-core allows it.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from executor.errors import RunbookError

MAX_PATTERN_LENGTH = 1024

# Names (letters, digits, '_', '-', '.'), wildcards '*' '?', separators ':' ','
# and spaces after them, '&' (and), '!' (not), subscripts [0], [0:2], [-1].
_PATTERN = re.compile(r"^[A-Za-z0-9_.\-*?:,&! \[\]]+$")
_SUBSCRIPT = re.compile(r"\[(-?\d+)?(:(-?\d+)?)?\]")


# Variables ansible's VariableManager adds for every host alike; not the host's own.
_CONTROLLER_MAGIC = frozenset(
    {
        "ansible_config_file",
        "ansible_facts",
        "ansible_playbook_python",
        "ansible_version",
        "groups",
        "hostvars",
        "omit",
        "playbook_dir",
    }
)


class InventoryError(RunbookError):
    """The inventory cannot be read, or a target pattern is not acceptable."""


def check_pattern(pattern: str) -> str:
    """The pattern, stripped, if it uses only Ansible's host pattern language; else raise."""
    stripped = pattern.strip()
    if not stripped:
        raise InventoryError(
            "the target's host pattern is empty",
            hint="name a host, a group or a pattern such as web:&eu",
        )
    if len(stripped) > MAX_PATTERN_LENGTH:
        raise InventoryError(
            f"the host pattern is {len(stripped)} characters long (at most "
            f"{MAX_PATTERN_LENGTH}): {stripped[:60]!r}...",
            hint="target a group instead of listing many hosts",
        )
    if "~" in stripped:
        raise InventoryError(
            f"the host pattern {stripped!r} uses a regular expression (~), which targets do "
            "not accept",
            hint="name the hosts or groups, or use * wildcards",
        )
    bad = sorted({c for c in stripped if not _PATTERN.match(c)})
    if bad or "[" in _SUBSCRIPT.sub("", stripped) or "]" in _SUBSCRIPT.sub("", stripped):
        shown = " ".join(repr(c) for c in bad) if bad else "'[' or ']' outside a [n] or [n:m]"
        raise InventoryError(
            f"the host pattern {stripped!r} has characters outside Ansible's host pattern "
            f"language: {shown}",
            hint="a pattern is names, groups, * ? wildcards, ':' ',' '&' '!' and [n:m] "
            "subscripts; if it came from an alert label, check the label and the input's pattern",
        )
    return stripped


class AnsibleInventory:
    """An Ansible inventory (file or directory) that resolves host patterns; thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._manager: Any = None
        self._variables: Any = None
        self._signature: tuple[int, int] | None = None

    def resolve(self, pattern: str) -> list[str]:
        """Host names ``pattern`` matches, in Ansible's order; ``[]`` if none."""
        pattern = check_pattern(pattern)
        with self._lock:
            manager = self._current()
            with _captured_warnings():
                try:
                    hosts = manager.list_hosts(pattern)
                except Exception as exc:  # ansible raises AnsibleError and plain errors alike
                    raise InventoryError(
                        f"the host pattern {pattern!r} cannot be resolved in {self.path}: "
                        f"{_first_line(exc)}",
                        hint="check the pattern's syntax (e.g. web[0:1], web:&eu:!web3)",
                    ) from None
        return [h.name for h in hosts if not getattr(h, "implicit", False)]

    def host_vars(self, name: str) -> dict[str, Any]:
        """The inventory variables of host ``name`` as Ansible would see them before a play
        (group and host vars, ``group_vars/`` and ``host_vars/`` beside the inventory,
        merged with Ansible's precedence), as plain Python values; templates are not
        rendered.

        Includes ``ansible_host``, ``ansible_port``, ``ansible_user`` and the
        like where the inventory sets them, plus ``inventory_hostname`` and
        ``group_names``; controller-wide magic (``groups``, ``ansible_version``)
        is left out.
        """
        with self._lock:
            manager = self._current()
            host = manager.get_host(name)
            if host is None or getattr(host, "implicit", False):
                raise InventoryError(
                    f"there is no host {name!r} in the inventory {self.path}",
                    hint="resolve a target first and use the names it returns",
                )
            with _captured_warnings():
                merged = self._variables.get_vars(host=host, include_hostvars=False)
        return {str(k): _plain(v) for k, v in merged.items() if k not in _CONTROLLER_MAGIC}

    def hosts(self) -> list[str]:
        """Every host of the inventory."""
        return self.resolve("all")

    # ------------------------------------------------------------------ building

    def _current(self) -> Any:
        """The manager, built on first use and rebuilt when the file changed."""
        signature = self._stat()
        if self._manager is None or signature != self._signature:
            self._manager, self._variables = self._build()
            self._signature = signature
        return self._manager

    def _stat(self) -> tuple[int, int]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise InventoryError(
                f"the inventory {self.path} does not exist",
                hint="set 'inventory' in the config file or RUNBOOK_INVENTORY to an Ansible "
                "inventory (for the sandbox: sandbox/.state/inventory.yml)",
            ) from None
        except OSError as exc:
            raise InventoryError(
                f"the inventory {self.path} cannot be read: {exc.strerror}"
            ) from None
        if self.path.is_file() and not os.access(self.path, os.R_OK):
            raise InventoryError(
                f"the inventory {self.path} is not readable by this user",
                hint=f"check its permissions (ls -l {self.path})",
            )
        return st.st_mtime_ns, st.st_size

    def _build(self) -> tuple[Any, Any]:
        """ansible-core's InventoryManager and VariableManager for the inventory."""
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.vars.manager import VariableManager

        source = str(self.path.resolve())
        loader = DataLoader()
        with _captured_warnings() as warnings:
            try:
                manager = InventoryManager(loader=loader, sources=[source])
            except Exception as exc:  # a plugin may raise instead of warning
                raise InventoryError(
                    f"ansible-core cannot parse the inventory {self.path}: {_first_line(exc)}",
                    hint=f"run `ansible-inventory -i {self.path} --list` for the details",
                ) from None
        # parse_sources() only warns about a source no plugin could parse; the list of
        # processed sources is the one record of what parsed (it has no public accessor).
        parsed = any(
            str(done) == source or str(done).startswith(source + os.sep)
            for done in manager._inventory.processed_sources
        )
        if not parsed:
            reasons = _parse_failures(warnings)
            raise InventoryError(
                f"ansible-core cannot parse the inventory {self.path}"
                + (f": {reasons}" if reasons else ""),
                hint=f"run `ansible-inventory -i {self.path} --list` for the details",
            )
        return manager, VariableManager(loader=loader, inventory=manager)

    def __repr__(self) -> str:
        return f"AnsibleInventory({str(self.path)!r})"


@contextlib.contextmanager
def _captured_warnings() -> Iterator[list[list[str]]]:
    """Collect ansible's display warnings instead of printing them, where it can.

    Each warning comes out as its chain of messages, outermost first.
    ansible-core 2.19 offers a warning-capture context (internal API); older
    versions print their warnings on stderr, which is harmless.
    """
    found: list[list[str]] = []
    try:
        from ansible._internal._display_utils import DeferredWarningContext
    except ImportError:
        yield found
        return
    with DeferredWarningContext(variables={}) as context:
        yield found
    found.extend(_event_messages(w.event) for w in context.get_warnings())


def _event_messages(event: Any) -> list[str]:
    """An ansible event's message and the messages of the events it chains to."""
    messages = []
    while event is not None:
        if getattr(event, "msg", None):
            messages.append(_first_line(event.msg))
        chain = getattr(event, "chain", None)
        event = getattr(chain, "event", None)
    return messages


_PLUGIN_FAILED = re.compile(r"Failed to parse inventory with '([\w.]+)' plugin")


def _parse_failures(warnings: list[list[str]]) -> str:
    """``ini plugin: <why>; yaml plugin: <why>`` from the warnings of a failed parse."""
    reasons: list[str] = []
    for chain in warnings:
        if not chain or chain[0].startswith("Unable to parse"):
            continue
        match = _PLUGIN_FAILED.match(chain[0])
        reason = f"{match.group(1)} plugin: {chain[-1]}" if match else chain[-1]
        if reason not in reasons:
            reasons.append(reason)
    return "; ".join(reasons)


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def _plain(value: Any) -> Any:
    """Ansible 2.19 tags inventory values (str/int subclasses); hand out plain ones."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value
