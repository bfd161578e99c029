"""What one ``ansible`` step hands to ansible-runner: a private directory, data, environment.

The rules, and why:

- **One private data dir per step**, mode 0700, removed with everything in it
  when the step ends. It holds only public material on disk: the certified
  public key and its certificate (OpenSSH needs ``CertificateFile=``), the
  runner settings, the callback plugin, a generated playbook for ``module``
  steps, and the ``ControlPath`` sockets (so a step never rides another
  step's SSH connection, authenticated with another certificate).
- **Secrets never land on disk.** The private key goes to ansible-runner as
  ``ssh_key=``, which hands it to ``ssh-agent`` through a FIFO it removes
  after ``ssh-add`` (read in ansible_runner/config/_base.py). Extra vars go
  the same way: through a FIFO here (``-e @fifo``), not ansible-runner's
  ``extravars=``, which puts them on the command line (readable by every
  local user in ``ps``) and in the ``artifacts/*/command`` file.
- **Data stays data.** Every string in extra vars and module args is tagged
  ``!unsafe``, so Ansible never templates it: a value such as
  ``{{ lookup('pipe', 'id') }}`` that came from an alert label arrives
  literally instead of running on the controller. Variable names are checked,
  and ``ansible_*`` names are refused: they would override how Ansible
  connects (``ansible_ssh_common_args`` can run a ProxyCommand).
- **A minimal environment.** ansible-runner copies the executor's whole
  environment (its Vault token, its AppRole secret id) into the job and into
  ``artifacts/*/command``; ``job_environment`` and ``scrub_runner_env``
  replace that with an allowlist plus what the job needs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from executor.actions.process import looks_secret, scrubbed_env
from executor.errors import ActionError

TAG_VARIABLE = "RUNBOOK_ANSIBLE_TAG"
"""Set on ``ansible-playbook``; every local process of the job inherits it (``ansible_procs``)."""

CALLBACK_NAME = "runbook_tag"
SETTINGS = {
    # ansible-runner checks cancel_callback once per pexpect timeout: 5 s by default
    # made a cancel take 2 to 4.5 s; 0.2 s makes it about 0.2 s.
    "pexpect_timeout": 0.2,
    "suppress_output_file": True,
    "suppress_ansible_output": True,
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_TAG_PART = re.compile(r"[^A-Za-z0-9_.-]+")
_MAGIC = frozenset(
    {
        "hostvars",
        "groups",
        "group_names",
        "inventory_hostname",
        "inventory_hostname_short",
        "inventory_dir",
        "inventory_file",
        "playbook_dir",
        "play_hosts",
        "omit",
        "role_path",
        "environment",
    }
)


# --------------------------------------------------------------------------- tags


def job_tag(run_id: str, step_id: str, nonce: str | None = None) -> str:
    """``<run>:<step>:<nonce>``: unique per attempt, and readable in a host's process list."""
    run = _TAG_PART.sub("_", run_id)[:64] or "run"
    step = _TAG_PART.sub("_", step_id)[:64] or "step"
    return f"{run}:{step}:{nonce or secrets.token_hex(6)}"


# --------------------------------------------------------------------------- data as data


class _Unsafe(str):
    """A string Ansible must never template (YAML ``!unsafe``)."""


class _UnsafeDumper(yaml.SafeDumper):
    pass


_UnsafeDumper.add_representer(
    _Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value), style="'")
)


def _untemplatable(value: Any, where: str) -> Any:
    """A copy of ``value`` in which every string (not mapping keys) is ``!unsafe``."""
    if isinstance(value, str):
        return _Unsafe(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ActionError(
                    f"{where}: key {key!r} is not a string",
                    hint="use string keys only in extravars and module args",
                )
            out[key] = _untemplatable(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_untemplatable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ActionError(
        f"{where} is a {type(value).__name__}, which cannot be passed to Ansible as data",
        hint="use strings, numbers, booleans, null, lists and mappings",
    )


def check_variable_name(name: str, step_id: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ActionError(
            f"step {step_id!r}: extravar name {name!r} is not a valid Ansible variable name",
            hint="use letters, digits and '_', starting with a letter or '_'",
        )
    if name.startswith("ansible_") or name in _MAGIC:
        raise ActionError(
            f"step {step_id!r}: extravar {name!r} is reserved: extra vars override "
            "everything, and this name changes how Ansible connects or what it targets",
            hint="rename the variable; connection settings belong in the inventory",
        )


def extravars_yaml(extravars: Mapping[str, Any], step_id: str) -> str:
    """Extra vars as YAML in which no value can be templated; names are checked first."""
    for name in extravars:
        check_variable_name(name, step_id)
    data = _untemplatable(dict(extravars), "extravars")
    return yaml.dump(data, Dumper=_UnsafeDumper, sort_keys=False, allow_unicode=True)


def check_module_name(module: str, step_id: str) -> str:
    if not _MODULE.match(module or ""):
        raise ActionError(
            f"step {step_id!r}: {module!r} is not an Ansible module name",
            hint="name a module such as ansible.builtin.command or ansible.builtin.file",
        )
    return module


def module_playbook(module: str, args: Mapping[str, Any], step_id: str) -> str:
    """A one-task playbook for a ``module`` step; its arguments are data, never templates.

    Why not ad-hoc ``ansible -m M -a ARGS``: the arguments would be on the
    command line (visible in ``ps``) and templated by Ansible.
    """
    check_module_name(module, step_id)
    play = {
        "name": _Unsafe(f"runbook step {step_id}"),
        "hosts": "all",
        "gather_facts": False,
        "tasks": [{"name": module, module: _untemplatable(dict(args), "args")}],
    }
    return yaml.dump([play], Dumper=_UnsafeDumper, sort_keys=False, allow_unicode=True)


def resolve_playbook(playbook_dir: Path, name: str, step_id: str) -> Path:
    """``name`` inside ``playbook_dir`` (symlinks resolved); refuse anything outside."""
    base = playbook_dir.resolve()
    relative = Path(name)
    if not name or relative.is_absolute():
        raise ActionError(
            f"step {step_id!r}: playbook {name!r} must be a path relative to the playbook "
            f"directory {base}",
            hint="write it as in the catalog, e.g. playbooks/clean_logs.yml",
        )
    path = (base / relative).resolve()
    if not path.is_relative_to(base):
        raise ActionError(
            f"step {step_id!r}: playbook {name!r} resolves to {path}, outside the playbook "
            f"directory {base}",
            hint="playbooks must live in the playbook directory; '..' and symlinks out of it "
            "are refused",
        )
    if not path.is_file():
        raise ActionError(
            f"step {step_id!r}: playbook {name!r} does not exist in {base}",
            hint="check the path and that the catalog ships the playbook",
        )
    return path


# --------------------------------------------------------------------------- the directory


class PrivateDataDir:
    """A 0700 directory for one ansible-runner job, and the FIFOs that feed it secrets.

    ``remove()`` first unblocks every FIFO nobody read (ansible-runner's own
    ``ssh_key_data`` included: if ``ssh-add`` never ran, its writer thread
    would block for ever), then deletes the tree.
    """

    def __init__(self, parent: Path | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="runbook-ansible-", dir=parent))  # 0700
        self._writers: dict[Path, threading.Thread] = {}

    def subdir(self, relative: str) -> Path:
        path = self.path / relative
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def write(self, relative: str, text: str, mode: int = 0o600) -> Path:
        path = self.path / relative
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def feed(self, relative: str, data: bytes) -> Path:
        """A FIFO that hands ``data`` to its first reader; nothing is stored on disk."""
        path = self.path / relative
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.mkfifo(path, 0o600)
        writer = threading.Thread(
            target=_write_fifo, args=(path, data), name=f"fifo-{path.name}", daemon=True
        )
        writer.start()
        self._writers[path] = writer
        return path

    def remove(self) -> None:
        for fifo in self._fifos():
            writer = self._writers.get(fifo)
            if writer is None or writer.is_alive():  # nobody read it: unblock its writer
                _drain_fifo(fifo)
        for writer in self._writers.values():
            writer.join(timeout=2.0)
        shutil.rmtree(self.path, ignore_errors=True)

    def _fifos(self) -> list[Path]:
        found = []
        for path in self.path.rglob("*"):
            with contextlib.suppress(OSError):
                if stat.S_ISFIFO(path.lstat().st_mode):
                    found.append(path)
        return found


def _write_fifo(path: Path, data: bytes) -> None:
    with contextlib.suppress(OSError), open(path, "wb") as handle:  # EPIPE: reader gone
        handle.write(data)


def _drain_fifo(path: Path, seconds: float = 1.0) -> None:
    """Read an unread FIFO to its end without blocking, so a writer waiting on it can finish.

    Opening the read end releases a writer blocked in ``open``; an empty read
    before any data means that writer has not opened yet, after data that it
    has closed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return
    end = time.monotonic() + seconds
    got = False
    try:
        while time.monotonic() < end:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                time.sleep(0.005)
                continue
            if chunk:
                got = True
            elif got:
                break
            else:
                time.sleep(0.005)
    finally:
        os.close(fd)


def install_callback(directory: PrivateDataDir) -> Path:
    """Copy ``ansible_callback`` into the job as the ``runbook_tag`` plugin; returns its dir."""
    spec = importlib.util.find_spec("executor.actions.ansible_callback")
    if spec is None or spec.origin is None:
        raise ActionError(
            "the runbook_tag callback plugin (executor/actions/ansible_callback.py) is missing",
            hint="reinstall the executor package",
        )
    plugins = directory.subdir("callbacks")
    shutil.copyfile(spec.origin, plugins / f"{CALLBACK_NAME}.py")
    return plugins


# --------------------------------------------------------------------------- environment


def ansible_bin_dir() -> Path:
    """Where ``ansible-playbook`` lives: beside this Python first (the virtualenv), else PATH."""
    beside = Path(sys.executable).parent
    if (beside / "ansible-playbook").is_file():
        return beside
    found = shutil.which("ansible-playbook")
    if found is None:
        raise ActionError(
            "ansible-playbook is not installed beside the executor nor on PATH",
            hint="install ansible-core in the executor's environment",
        )
    return Path(found).parent


def ssh_args(*, identity: Path, certificate: Path, known_hosts: Path) -> str:
    """OpenSSH options for every connection of the job (they come first, so they win).

    The key itself is only in ssh-agent; ``IdentityFile`` names its public
    half so that ``IdentitiesOnly`` offers that key (with its certificate)
    and nothing else. Host keys are checked against the pinned file only,
    and no ssh_config file is read.
    """
    options = [
        "-F",
        "/dev/null",
        "-C",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60s",
        "-o",
        f"IdentityFile={identity}",
        "-o",
        f"CertificateFile={certificate}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]
    return " ".join(shlex.quote(o) for o in options)


def job_environment(
    *,
    private: Path,
    callbacks: Path,
    ssh: str,
    tag: str,
    pipelining: bool,
    bin_dir: Path,
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``ansible-playbook``: an allowlist, plus the job's settings."""
    parent = os.environ if parent is None else parent
    env = scrubbed_env(parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env.update(
        {
            "ANSIBLE_SSH_ARGS": ssh,
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(private / "cp"),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PIPELINING": "True" if pipelining else "False",
            "ANSIBLE_LOCAL_TEMP": str(private / "tmp"),
            "ANSIBLE_CALLBACK_PLUGINS": str(callbacks),
            "ANSIBLE_CALLBACKS_ENABLED": CALLBACK_NAME,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            TAG_VARIABLE: tag,
        }
    )
    return env


def scrub_runner_env(runner_env: Mapping[str, str], job_env: Mapping[str, str]) -> dict[str, str]:
    """ansible-runner's environment for the job, minus what it copied from the executor.

    Kept: everything in ``job_env``, and what ansible-runner itself set or
    changed (its callback, artifact and cache settings). Dropped: variables
    it inherited unchanged from the executor's own environment (Vault
    settings and anything else), unless they are in ``job_env``; and any
    name that looks secret, whatever its origin.
    """
    parent = os.environ
    return {
        name: value
        for name, value in runner_env.items()
        if name in job_env or (parent.get(name) != value and not looks_secret(name))
    }


def settings_json() -> str:
    """``env/settings`` for the private dir: the only way settings reach ansible-runner 2.4.

    Its ``prepare_env`` replaces the ``settings=`` argument by ``{}`` when
    ``env/settings`` does not exist (and with ``suppress_env_files`` nothing
    writes it), so ``pexpect_timeout`` passed as an argument is silently
    dropped. Nothing in it is secret.
    """
    return json.dumps(SETTINGS)
