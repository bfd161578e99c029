"""The ``ansible`` action: a playbook, or one module, on a target's hosts via ansible-runner.

A step runs as one ansible-runner job (``ansible-playbook``) in a private
data dir of its own (``ansible_job``): the inventory from configuration,
``--limit`` set to exactly the hosts the engine resolved, the step's
Vault-signed certificate as the only identity (private key through
ssh-agent, never on disk), host keys checked against the pinned
known_hosts, extra vars and module args passed as untemplatable data. A
``module`` step becomes a one-task playbook. ``dry_run`` means check mode
(``--check --diff``) when the engine issued a credential, and touching
nothing at all when it did not.

Progress: each task's end on each host becomes ``request.on_event(
"ansible.task", {host, task, status, changed, rc, duration, msg, ignored})``
(masked; never the raw module result, which holds module arguments). The
events are not written to the artifact dir, and the dir is deleted anyway.
If the audit cannot record an event, the play is stopped: audit is
fail-closed.

Stopping (kill-switch, ``runbook kill``, timeout): ansible-runner's own
cancel kills ``ansible-playbook`` only; its setsid'ed workers, their ssh
clients and, on the hosts, the commands themselves keep running. So on
cancel this runner, in order, stops every local process carrying the job's
tag (``ansible_procs``: workers, ssh clients, ControlPersist masters,
ssh-agent), then runs a stop script on every host over SSH with the step's
certificate (``remote_reaper``), which ends every process whose environment
carries the tag (``ansible_callback`` puts it there). The result says what
was stopped where.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_runner.config.runner import RunnerConfig
from ansible_runner.runner import Runner

from executor.actions import expect_action
from executor.actions.ansible_events import (
    Ending,
    PlayRecord,
    build_result,
    stats_summary,
)
from executor.actions.ansible_job import (
    TAG_VARIABLE,
    PrivateDataDir,
    ansible_bin_dir,
    extravars_yaml,
    install_callback,
    job_environment,
    job_tag,
    module_playbook,
    resolve_playbook,
    scrub_runner_env,
    settings_json,
    ssh_args,
)
from executor.actions.ansible_procs import MarkedProcesses, StopReport
from executor.actions.inventory import AnsibleInventory
from executor.actions.remote_reaper import HostReap, RemoteReaper, summarize
from executor.actions.sshconn import ClientIdentity, identity_from_credential
from executor.errors import ActionError, RunbookError
from executor.model import AnsibleAction
from executor.ports import ActionRequest, ActionResult, CancelToken

TASK_EVENT = "ansible.task"


@dataclass(frozen=True)
class _Plan:
    """What a step will run, checked before anything starts."""

    playbook: Path | None  # a playbook from the playbook dir, or None for a module step
    module_play: str | None  # the generated one-task playbook of a module step
    extravars: str  # YAML, every string !unsafe

    def describe(self, action: AnsibleAction) -> str:
        if self.playbook is not None:
            return f"ansible-playbook {action.playbook}"
        return f"ansible module {action.module}"


class AnsibleRunner:
    """Runs ``ansible`` steps; one instance serves every run (no per-run state).

    ``playbook_dir`` is where step playbooks live (and the job's working
    directory, so an ``ansible.cfg`` there applies). ``forks`` bounds the
    hosts worked on at once; ``kill_grace`` is the time between SIGTERM and
    SIGKILL, locally and on the hosts. ``work_dir`` is where private data
    dirs are made (default: the system temp dir). ``before_cleanup`` is
    called with a private data dir just before it is deleted (for audits of
    what a job leaves on disk, and tests). ``inventory`` shares the wiring's
    ``AnsibleInventory`` of ``inventory_path`` (one is made if not given).
    ``pipelining`` is Ansible's (fewer SSH round trips per task; set False
    for hosts whose sudoers require a tty).
    """

    kind = "ansible"

    def __init__(
        self,
        *,
        inventory_path: Path,
        known_hosts: Path,
        playbook_dir: Path,
        forks: int = 10,
        kill_grace: float = 2.0,
        pipelining: bool = True,
        work_dir: Path | None = None,
        before_cleanup: Callable[[Path], None] | None = None,
        inventory: AnsibleInventory | None = None,
    ) -> None:
        self.inventory_path = Path(inventory_path)
        self.known_hosts = Path(known_hosts)
        self.playbook_dir = Path(playbook_dir)
        self.forks = max(1, forks)
        self.kill_grace = kill_grace
        self.pipelining = pipelining
        self.work_dir = work_dir
        self.before_cleanup = before_cleanup
        self._inventory = inventory
        self._lock = threading.Lock()
        self._warming: threading.Thread | None = None

    @property
    def inventory(self) -> AnsibleInventory:
        """The inventory that gives hosts' addresses for stopping remote work."""
        with self._lock:
            if self._inventory is None:
                self._inventory = AnsibleInventory(self.inventory_path)
            return self._inventory

    def run(self, request: ActionRequest, cancel: CancelToken) -> ActionResult:
        action = expect_action(request, AnsibleAction, self.kind)
        mask = request.mask
        if not request.hosts:
            return ActionResult(
                ok=False,
                error=f"step {request.step_id!r}: target {action.target!r} resolved to no host; "
                "nothing was run",
            )
        try:
            plan = self.plan(request, action)
        except RunbookError as exc:
            return ActionResult(ok=False, error=mask(str(exc)))
        if request.dry_run and request.credential is None:
            return ActionResult(
                ok=True,
                data={
                    "dry_run": True,
                    "would_run": mask(plan.describe(action)),
                    "hosts": list(request.hosts),
                },
            )
        if request.credential is None:
            return ActionResult(
                ok=False,
                error=f"step {request.step_id!r}: an ansible step needs a vault_ssh credential; "
                "nothing was run",
            )
        try:
            identity = identity_from_credential(request.credential)
        except RunbookError as exc:
            return ActionResult(ok=False, error=mask(str(exc)))
        invalid = identity.check_valid(time.time())
        if invalid is not None:
            return ActionResult(ok=False, error=mask(invalid))
        if cancel.cancelled:
            return ActionResult(
                ok=False,
                cancelled=True,
                error=mask(
                    f"cancelled before it started: {cancel.reason or 'no reason given'}; "
                    "nothing was run"
                ),
            )
        self._warm_inventory()
        return _StepJob(self, request, plan, identity, cancel).run()

    def _warm_inventory(self) -> None:
        """Parse the inventory in the background once, so that a cancel does not wait for it.

        Stopping remote work needs each host's address from the inventory;
        the first parse costs about half a second (importing ansible-core).
        """
        with self._lock:
            if self._warming is not None:
                return
            self._warming = threading.Thread(
                target=self._parse_inventory, name="ansible-inventory", daemon=True
            )
        self._warming.start()

    def _parse_inventory(self) -> None:
        # A broken inventory is reported properly by ansible-playbook itself.
        with contextlib.suppress(Exception):
            self.inventory.hosts()

    def plan(self, request: ActionRequest, action: AnsibleAction) -> _Plan:
        """Check the step (playbook path, module name, variable names) before touching anything."""
        step = request.step_id
        if bool(action.playbook) == bool(action.module):
            raise ActionError(
                f"step {step!r}: an ansible action needs exactly one of playbook and module",
                hint="write `playbook: path.yml` or `module: M` with `args: {...}`",
            )
        extravars = extravars_yaml(action.extravars, step)
        if action.playbook:
            playbook = resolve_playbook(self.playbook_dir, action.playbook, step)
            return _Plan(playbook, None, extravars)
        module = str(action.module)
        return _Plan(None, module_playbook(module, action.args, step), extravars)


class _StepJob:
    """One execution of one step: prepare, run, stop if asked, report, clean up."""

    def __init__(
        self,
        runner: AnsibleRunner,
        request: ActionRequest,
        plan: _Plan,
        identity: ClientIdentity,
        cancel: CancelToken,
    ) -> None:
        self.runner = runner
        self.request = request
        self.plan = plan
        self.identity = identity
        self.cancel = cancel
        self.hosts = list(request.hosts)
        self.tag = job_tag(request.run_id, request.step_id)
        self.record = PlayRecord(mask=request.mask)
        self.local: MarkedProcesses | None = None  # known once the private dir exists
        self.started = time.monotonic()
        self.deadline = self.started + request.timeout if request.timeout else None
        self.timed_out = False
        self.audit_failure: str | None = None
        self._stopper: threading.Thread | None = None
        self._local_report: StopReport | None = None
        self._remote_report: dict[str, HostReap] = {}

    # ------------------------------------------------------------------ the job

    def run(self) -> ActionResult:
        directory = PrivateDataDir(self.runner.work_dir)
        self.local = MarkedProcesses(TAG_VARIABLE, self.tag, cmdline=f"{directory.path}/")
        status, rc, crash = "error", None, None
        launched = False
        try:
            config = self._config(directory)
            job = Runner(
                config=config, event_handler=self._on_event, cancel_callback=self._should_stop
            )
            launched = True
            status, rc = job.run()
        except Exception as exc:  # ansible-runner raises plain exceptions on bad config
            crash = str(exc) if isinstance(exc, RunbookError) else f"{type(exc).__name__}: {exc}"
            if launched:  # whatever the play started must not outlive the step
                self._start_stopping()
        finally:
            self._finish_stopping()
            try:
                if self.runner.before_cleanup is not None:
                    self.runner.before_cleanup(directory.path)
            finally:
                directory.remove()
        return self._result(status, rc, crash)

    def _config(self, directory: PrivateDataDir) -> RunnerConfig:
        runner, request = self.runner, self.request
        assert request.credential is not None  # checked by AnsibleRunner.run
        material = request.credential.material
        # Public material only: the certified public key and the certificate.
        identity_file = directory.write("identity/id.pub", self.identity.cert.certified_key + "\n")
        cert_file = directory.write(
            "identity/id-cert.pub", str(material.certificate()).strip() + "\n"
        )
        directory.write("env/settings", settings_json())
        callbacks = install_callback(directory)
        if self.plan.playbook is not None:
            playbook = self.plan.playbook
        else:
            playbook = directory.write("play/module.yml", self.plan.module_play or "")
        extravars = directory.feed("env/extravars.yml", self.plan.extravars.encode())
        args = ["-e", f"@{extravars}"]
        if request.dry_run:
            args += ["--check", "--diff"]
        job_env = job_environment(
            private=directory.path,
            callbacks=callbacks,
            ssh=ssh_args(
                identity=identity_file, certificate=cert_file, known_hosts=runner.known_hosts
            ),
            tag=self.tag,
            pipelining=runner.pipelining,
            bin_dir=ansible_bin_dir(),
        )
        directory.subdir("tmp")
        directory.subdir("cp")
        config = RunnerConfig(
            private_data_dir=str(directory.path),
            project_dir=str(runner.playbook_dir),
            playbook=str(playbook),
            inventory=str(runner.inventory_path),
            limit=",".join(self.hosts),
            forks=min(runner.forks, len(self.hosts)),
            cmdline=" ".join(shlex.quote(a) for a in args),
            ssh_key=str(material.private_key_openssh()),
            envvars=job_env,
            suppress_env_files=True,
            fact_cache_type="memory",  # not ansible-runner's jsonfile: no facts on disk
            quiet=True,
            ident="job",
        )
        config.prepare()
        config.env = scrub_runner_env(config.env, job_env)
        return config

    # ------------------------------------------------------------------ callbacks

    def _on_event(self, event: Mapping[str, Any]) -> bool:
        """Every event ansible-runner decodes; returns False so none is written to disk.

        Never raises: an exception here would end ``Runner.run`` while the
        play goes on.
        """
        try:
            outcome = self.record.add(event)
        except Exception:  # an event of a shape never seen: keep the play going
            return False
        emit = self.request.on_event
        if outcome is None or emit is None or self.audit_failure is not None:
            return False
        payload = outcome.audit_payload()
        if self.request.dry_run:
            payload["check_mode"] = True  # "changed" means "would change"
        try:
            emit(TASK_EVENT, payload)
        except Exception as exc:
            message = exc.message if isinstance(exc, RunbookError) else str(exc)
            self.audit_failure = (
                f"the audit could not record an Ansible task ({message}); the play was "
                "stopped because audit is fail-closed"
            )
        return False

    def _should_stop(self) -> bool:
        """Polled by ansible-runner every ``pexpect_timeout``; never raises."""
        if self._stopper is not None:
            return True
        stop = self.cancel.cancelled or self.audit_failure is not None
        if not stop and self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = stop = True
        if stop:
            self._start_stopping()
        return stop

    # ------------------------------------------------------------------ stopping

    def _start_stopping(self) -> None:
        """Stop local processes, then remote ones, in a thread: ansible-runner waits for
        its pty to close, which happens only once the setsid'ed workers are gone."""
        if self._stopper is None:
            self._stopper = threading.Thread(
                target=self._stop_everything, name=f"ansible-stop-{self.tag}", daemon=True
            )
            self._stopper.start()

    def _stop_everything(self) -> None:
        grace = self.runner.kill_grace
        if self.local is not None:
            self._local_report = self.local.stop(grace)
        reaper = RemoteReaper(
            self.runner.known_hosts, self.runner.inventory, forks=self.runner.forks
        )
        credential = self.request.credential
        if credential is not None:
            self._remote_report = reaper.reap(self.hosts, credential, self.tag, grace)

    def _finish_stopping(self) -> None:
        """Join the stopper if a stop was asked; in any case end what the job left here.

        Even a successful play leaves ControlPersist masters (idle, their
        sockets about to be deleted with the private dir) and ssh-agent
        (holding the key until it notices its parent is gone, up to 10 s).
        After a stop that sweep is part of the result; after a normal end it
        runs in the background, so the step does not wait for idle processes
        to exit.
        """
        local = self.local
        if local is None:
            return
        if self._stopper is not None:
            self._stopper.join()
            local.stop(self.runner.kill_grace)  # late arrivals, if any
            return
        threading.Thread(
            target=local.stop,
            args=(self.runner.kill_grace,),
            name=f"ansible-sweep-{self.tag}",
            daemon=True,
        ).start()

    # ------------------------------------------------------------------ result

    def _result(self, status: str, rc: int | None, crash: str | None) -> ActionResult:
        stopped = self._stopper is not None
        cancelled = stopped and not self.timed_out and crash is None
        reason = self.audit_failure or self.cancel.reason
        report = None
        if stopped:
            local = self._local_report.describe() if self._local_report else ""
            report = "; ".join(p for p in (local, summarize(self._remote_report)) if p)
        ending = Ending(
            status=status,
            rc=rc,
            cancelled=cancelled,
            timed_out=self.timed_out,
            reason=reason,
            timeout=self.request.timeout,
            stop_report=report,
            failure=f"ansible-runner failed: {crash}" if crash else None,
        )
        return build_result(self.record, self.hosts, ending, data=self._data(status, rc))

    def _data(self, status: str, rc: int | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "runner_status": status,
            "runner_rc": rc,
            "check_mode": self.request.dry_run,
            "tag": self.tag,
            "duration": round(time.monotonic() - self.started, 3),
            "tasks": self.record.tasks_seen,
            "stats": stats_summary(self.record, self.hosts),
        }
        untouched = [h for h in self.hosts if h not in self.record.hosts]
        if untouched and status == "successful":
            data["untouched"] = untouched
        if self._stopper is not None:
            data["stopped"] = {
                "local": self._local_report.found if self._local_report else 0,
                "remote": {h: r.as_dict() for h, r in self._remote_report.items()},
            }
        return data
