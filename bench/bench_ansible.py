"""What does an ``ansible`` step cost over running ``ansible-playbook`` by hand?

Brings up a sandbox in a temporary directory (and always takes it down),
signs one OpenBao certificate for principal ``ops``, then runs a trivial
playbook (one ``ansible.builtin.command: "true"`` task, no fact gathering)
on 1, 5 and 50 hosts, median of 5 runs each, the two contenders interleaved:

- ``ansible step``: ``AnsibleRunner.run`` with a fresh step each time:
  private data dir, ansible-runner (pexpect, event decoding, ssh-agent for
  the key), the tagging callback, the audit events, and the clean-up of
  ControlPersist masters and ssh-agent at the end;
- ``ansible-playbook``: the same playbook run directly (``subprocess``),
  same inventory, same key (as a 0600 file) and certificate, same OpenSSH
  options, pipelining and forks, output to /dev/null; each run gets a fresh
  ControlPath directory, as each step does, so neither reuses a connection.

Target: the step at most 1.1x ``ansible-playbook``.

    .venv/bin/python bench/bench_ansible.py [--hosts 1,5,50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.actions.ansible import AnsibleRunner
from executor.actions.ansible_job import ansible_bin_dir
from executor.actions.ansible_procs import MarkedProcesses
from executor.actions.process import scrubbed_env
from executor.model import AnsibleAction
from executor.ports import ActionRequest, CancelToken, IssuedCredential
from executor.sandbox import SandboxInfo, down, sign_certificate, up
from executor.sandbox.keys import ed25519_keypair

RATIO_TARGET = 1.1
PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: nothing
      ansible.builtin.command: "true"
"""
STEP = "ansible step"
DIRECT = "ansible-playbook"


class _Material:
    """The shape of a vault_ssh credential's material: key text and certificate text."""

    def __init__(self, private_openssh: str, certificate: str) -> None:
        self._key, self._cert = private_openssh, certificate

    def private_key_openssh(self) -> str:
        return self._key

    def certificate(self) -> str:
        return self._cert


class Fixture:
    """The world, one identity (in memory for the step, on disk for ansible-playbook)."""

    def __init__(self, info: SandboxInfo, workdir: Path, forks: int) -> None:
        self.info = info
        self.workdir = workdir
        self.forks = forks
        pair = ed25519_keypair()
        cert = sign_certificate(info, pair.public_openssh, ["ops"], "60m", key_id="bench")
        self.key_file = workdir / "id_ed25519"
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pair.private_openssh)
        self.cert_file = workdir / "id_ed25519-cert.pub"
        self.cert_file.write_text(cert + "\n")
        self.books = workdir / "playbooks"
        self.books.mkdir()
        (self.books / "noop.yml").write_text(PLAYBOOK)
        material = _Material(pair.private_openssh, cert)
        self.credential = IssuedCredential("ops_ssh", "vault_ssh", public={}, material=material)
        self.runner = AnsibleRunner(
            inventory_path=info.inventory,
            known_hosts=info.known_hosts,
            playbook_dir=self.books,
            forks=forks,
        )

    def hosts(self, count: int) -> list[str]:
        return [h.name for h in self.info.hosts[:count]]


def ansible_step(fx: Fixture, hosts: list[str], round_: int) -> float:
    request = ActionRequest(
        run_id=f"bench-{len(hosts)}-{round_}",
        step_id="noop",
        action=AnsibleAction(target="bench", credential="ops_ssh", playbook="noop.yml"),
        hosts=hosts,
        credential=fx.credential,
        timeout=600,
        on_event=lambda event, data: None,
    )
    start = time.perf_counter()
    result = fx.runner.run(request, CancelToken())
    elapsed = time.perf_counter() - start
    _check(result.ok, result.error)
    return elapsed


def ansible_playbook(fx: Fixture, hosts: list[str], round_: int) -> float:
    control = Path(tempfile.mkdtemp(prefix="rb-bench-cp-"))
    options = [
        "-F /dev/null",
        "-C",
        "-o ControlMaster=auto",
        "-o ControlPersist=60s",
        f"-o CertificateFile={fx.cert_file}",
        "-o IdentitiesOnly=yes",
        f"-o UserKnownHostsFile={fx.info.known_hosts}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o StrictHostKeyChecking=yes",
        "-o BatchMode=yes",
    ]
    env = scrubbed_env(os.environ)
    env.update(
        {
            "PATH": f"{ansible_bin_dir()}{os.pathsep}{env['PATH']}",
            "ANSIBLE_SSH_ARGS": " ".join(options),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
    )
    argv = [
        "ansible-playbook",
        "-i",
        str(fx.info.inventory),
        "--limit",
        ",".join(hosts),
        "--forks",
        str(min(fx.forks, len(hosts))),
        "--private-key",
        str(fx.key_file),
        str(fx.books / "noop.yml"),
    ]
    start = time.perf_counter()
    done = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False
    )
    elapsed = time.perf_counter() - start
    # Its ControlPersist masters (found by their ControlPath) must not serve the next run.
    MarkedProcesses("RUNBOOK_BENCH", str(round_), cmdline=f"{control}/").stop(2.0)
    shutil.rmtree(control, ignore_errors=True)
    _check(done.returncode == 0, f"ansible-playbook exited with {done.returncode}")
    return elapsed


def _check(ok: bool, message: str | None) -> None:
    if not ok:
        raise SystemExit(f"benchmark run failed: {message}")


def measure(fx: Fixture, counts: Sequence[int], rounds: int) -> dict[int, dict[str, float]]:
    table: dict[int, dict[str, float]] = {}
    for count in counts:
        hosts = fx.hosts(count)
        ansible_step(fx, hosts, -1)  # warm the page cache and imports for both alike
        rows: dict[str, list[float]] = {STEP: [], DIRECT: []}
        for i in range(rounds):  # interleaved, alternating who goes first
            order = [(STEP, ansible_step), (DIRECT, ansible_playbook)]
            for name, run in order if i % 2 == 0 else reversed(order):
                rows[name].append(run(fx, hosts, i))
        table[count] = {name: statistics.median(times) for name, times in rows.items()}
        spread = {n: f"{min(t):.2f}-{max(t):.2f}" for n, t in rows.items()}
        print(f"{count} host(s): ranges {spread}", flush=True)
    return table


def report(table: dict[int, dict[str, float]], rounds: int) -> bool:
    counts = sorted(table)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"median of {rounds} runs, seconds; load average {load}")
    print(f"{'':20}" + "".join(f"{f'{n} host(s)':>14}" for n in counts))
    for name in (DIRECT, STEP):
        print(f"{name:20}" + "".join(f"{table[n][name]:>14.3f}" for n in counts))
    ratios = {n: table[n][STEP] / table[n][DIRECT] for n in counts}
    print(f"{'ratio step/direct':20}" + "".join(f"{ratios[n]:>13.2f}x" for n in counts))
    worst = max(ratios.values())
    met = worst <= RATIO_TARGET
    print(
        f"target: step <= {RATIO_TARGET}x ansible-playbook at every size: worst "
        f"{worst:.2f}x {'met' if met else 'NOT MET'}"
    )
    return met


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,5,50", help="comma-separated host counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--forks", type=int, default=10, help="as AnsibleRunner's default")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.hosts.split(",")})
    state_dir = Path(tempfile.mkdtemp(prefix="runbook-bench-ansible-"))  # host users reach it
    workdir = Path(tempfile.mkdtemp(prefix="runbook-bench-ansible-keys-"))
    try:
        start = time.perf_counter()
        info = up(hosts=max(counts), state_dir=state_dir)
        print(f"sandbox of {max(counts)} hosts up in {time.perf_counter() - start:.1f} s")
        table = measure(Fixture(info, workdir, args.forks), counts, args.rounds)
    finally:
        down(state_dir)
        shutil.rmtree(workdir, ignore_errors=True)
        if state_dir.exists():
            state_dir.rmdir()
    return 0 if report(table, args.rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
