"""What does the ``ssh`` action cost over a bare SSH fan-out, cold and warm?

Brings up a sandbox of 50 sshd hosts in a temporary directory (and always
takes it down), signs one OpenBao certificate for principal ``ops``, then
runs one trivial command (``true``) on 1, 10 and 50 hosts, median of 5 runs
each, with the same key and certificate everywhere:

- ``ssh step cold``: an ``SshRunner.run`` with a fresh run id (new
  connections: connect, authenticate, exec, and everything the action adds:
  inventory lookup, pinned host keys, the process-group wrapper, results);
- ``paramiko``: bare paramiko clients in one thread per host (connect +
  certificate auth + exec + exit status), host keys pinned the same way;
- ``openssh``: one ``ssh`` process per host, all started at once
  (``-F none``, the key and its certificate, the sandbox known_hosts);
- ``ssh step warm``: a second ``SshRunner.run`` in the same run (the
  connections of the run's first step are reused);
- ``paramiko warm``: for reference, one ``exec_command`` per host on
  already connected paramiko clients (TCP_NODELAY set, as the runner sets
  it), one thread per host.

Targets: cold step at most 1.25x bare paramiko at 50 hosts; warm step at
most 0.3 s for 50 hosts. The runner uses ``forks`` = the host count (as the
baselines run every host at once); a row with the default forks=10 is shown
for information.

    .venv/bin/python bench/bench_ssh_fanout.py [--hosts 1,10,50] [--rounds 5] [--command true]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from executor.actions.inventory import AnsibleInventory
from executor.actions.ssh import SshRunner
from executor.model import SshAction
from executor.ports import ActionRequest, CancelToken, IssuedCredential
from executor.sandbox import HostInfo, SandboxInfo, down, sign_certificate, up
from executor.sandbox.keys import ed25519_keypair

COLD_RATIO_TARGET = 1.25
WARM_TARGET_SECONDS = 0.3
SANDBOX_HOSTS = 50


class _Material:
    """The shape of a vault_ssh credential's material: key text and certificate text."""

    def __init__(self, private_openssh: str, certificate: str) -> None:
        self._key, self._cert = private_openssh, certificate

    def private_key_openssh(self) -> str:
        return self._key

    def certificate(self) -> str:
        return self._cert


class Fixture:
    """The world, one identity on disk and in memory, and the runner's inputs."""

    def __init__(self, info: SandboxInfo, workdir: Path, command: str) -> None:
        self.info = info
        self.command = command
        pair = ed25519_keypair()
        self.cert = sign_certificate(info, pair.public_openssh, ["ops"], "30m", key_id="bench")
        self.key_text = pair.private_openssh
        self.key_file = workdir / "id_ed25519"
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(pair.private_openssh)
        self.cert_file = workdir / "id_ed25519-cert.pub"
        self.cert_file.write_text(self.cert + "\n")
        material = _Material(self.key_text, self.cert)
        self.credential = IssuedCredential("ops_ssh", "vault_ssh", public={}, material=material)
        self.inventory = AnsibleInventory(info.inventory)
        self.inventory.resolve("all")  # parse once, as a long-lived executor would have

    def hosts(self, count: int) -> list[HostInfo]:
        return list(self.info.hosts[:count])

    def request(self, run_id: str, hosts: Sequence[HostInfo]) -> ActionRequest:
        return ActionRequest(
            run_id=run_id,
            step_id="fanout",
            action=SshAction(target="bench", command=self.command, credential="ops_ssh"),
            hosts=[h.name for h in hosts],
            credential=self.credential,
            timeout=60,
        )

    def pkey(self) -> paramiko.PKey:
        key = paramiko.Ed25519Key(file_obj=io.StringIO(self.key_text))
        key.load_certificate(self.cert)
        return key


# --------------------------------------------------------------------------- the contenders


def ssh_step(fx: Fixture, hosts: Sequence[HostInfo], forks: int, round_: int) -> float:
    """One cold step: a new run id, so every connection is new; closed afterwards."""
    run_id = f"cold-{len(hosts)}-{forks}-{round_}"
    with SshRunner(inventory=fx.inventory, known_hosts=fx.info.known_hosts, forks=forks) as r:
        start = time.perf_counter()
        result = r.run(fx.request(run_id, hosts), CancelToken())
        elapsed = time.perf_counter() - start
    _check(result.ok, result.error)
    return elapsed


def ssh_step_warm(fx: Fixture, hosts: Sequence[HostInfo], rounds: int) -> list[float]:
    """A first step opens the run's connections; the timed steps reuse them."""
    with SshRunner(
        inventory=fx.inventory, known_hosts=fx.info.known_hosts, forks=len(hosts)
    ) as runner:
        first = runner.run(fx.request("warm", hosts), CancelToken())
        _check(first.ok, first.error)
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            result = runner.run(fx.request("warm", hosts), CancelToken())
            times.append(time.perf_counter() - start)
            _check(result.ok, result.error)
            _check(result.data["connections"]["opened"] == 0, "a warm step opened a connection")
    return times


def bare_paramiko(fx: Fixture, hosts: Sequence[HostInfo], round_: int) -> float:
    pinned = paramiko.HostKeys(str(fx.info.known_hosts))
    key = fx.pkey()
    errors: list[str] = []

    def one(host: HostInfo) -> None:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        name = f"[{host.address}]:{host.port}"
        for key_type, host_key in (pinned.lookup(name) or {}).items():
            client.get_host_keys().add(name, key_type, host_key)
        try:
            client.connect(
                host.address,
                port=host.port,
                username=host.user,
                pkey=key,
                look_for_keys=False,
                allow_agent=False,
                timeout=10,
            )
            _, stdout, _ = client.exec_command(fx.command)
            if stdout.channel.recv_exit_status() != 0:
                errors.append(f"{host.name}: non-zero exit")
        except Exception as exc:  # report, the bench fails below
            errors.append(f"{host.name}: {exc}")
        finally:
            client.close()

    return _threads(one, hosts, errors)


def bare_paramiko_warm(fx: Fixture, hosts: Sequence[HostInfo], rounds: int) -> list[float]:
    """Channels on already open paramiko clients, one thread per host: the floor for (b)."""
    key = fx.pkey()
    clients = []
    for host in hosts:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # keys are checked above
        client.connect(
            host.address,
            port=host.port,
            username=host.user,
            pkey=key,
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        # As the runner does; without it some requests wait ~40 ms for a delayed ACK.
        client.get_transport().sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clients.append(client)
    errors: list[str] = []

    def one(index: int) -> None:
        _, stdout, _ = clients[index].exec_command(fx.command)
        if stdout.channel.recv_exit_status() != 0:
            errors.append(f"{hosts[index].name}: non-zero exit")

    try:
        times = []
        for _ in range(rounds):
            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(hosts))]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            times.append(time.perf_counter() - start)
            _check(not errors, "; ".join(errors[:3]))
    finally:
        for client in clients:
            client.close()
    return times


def openssh(fx: Fixture, hosts: Sequence[HostInfo], round_: int) -> float:
    base = [
        "ssh",
        "-F",
        "none",
        "-i",
        str(fx.key_file),
        "-o",
        f"CertificateFile={fx.cert_file}",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={fx.info.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
    ]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*base, "-p", str(h.port), "-l", h.user, h.address, fx.command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for h in hosts
    ]
    failures = []
    for host, proc in zip(hosts, procs, strict=True):
        _, err = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{host.name}: {err.decode(errors='replace').strip()}")
    elapsed = time.perf_counter() - start
    _check(not failures, "; ".join(failures[:3]))
    return elapsed


def _threads(
    work: Callable[[HostInfo], None], hosts: Sequence[HostInfo], errors: list[str]
) -> float:
    threads = [threading.Thread(target=work, args=(h,)) for h in hosts]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    _check(not errors, "; ".join(errors[:3]))
    return elapsed


def _check(ok: bool, message: str | None) -> None:
    if not ok:
        raise SystemExit(f"benchmark run failed: {message}")


# --------------------------------------------------------------------------- reporting


def measure(fx: Fixture, counts: Sequence[int], rounds: int) -> dict[int, dict[str, float]]:
    table: dict[int, dict[str, float]] = {}
    for count in counts:
        hosts = fx.hosts(count)
        rows: dict[str, list[float]] = {
            "ssh step cold": [],
            "ssh step cold forks=10": [],
            "paramiko": [],
            "openssh": [],
        }
        for i in range(rounds):  # interleaved, so drift hits every contender alike
            rows["paramiko"].append(bare_paramiko(fx, hosts, i))
            rows["ssh step cold"].append(ssh_step(fx, hosts, count, i))
            rows["openssh"].append(openssh(fx, hosts, i))
            rows["ssh step cold forks=10"].append(ssh_step(fx, hosts, 10, i))
        rows["ssh step warm"] = ssh_step_warm(fx, hosts, rounds)
        rows["paramiko warm"] = bare_paramiko_warm(fx, hosts, rounds)
        table[count] = {name: statistics.median(times) for name, times in rows.items()}
    return table


def report(table: dict[int, dict[str, float]], rounds: int) -> bool:
    counts = sorted(table)
    names = list(next(iter(table.values())))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"median of {rounds} runs, seconds (ratio to bare paramiko); load average {load}")
    print(f"{'':24}" + "".join(f"{f'{n} host(s)':>22}" for n in counts))
    for name in names:
        cells = []
        for n in counts:
            value, base = table[n][name], table[n]["paramiko"]
            cells.append(f"{value:8.3f} ({value / base:5.2f}x)")
        print(f"{name:24}" + "".join(f"{c:>22}" for c in cells))
    top = max(counts)
    cold_ratio = table[top]["ssh step cold"] / table[top]["paramiko"]
    cold_vs_openssh = table[top]["ssh step cold"] / table[top]["openssh"]
    warm = table[top]["ssh step warm"]
    warm_vs_paramiko = warm / table[top]["paramiko warm"]
    cold_ok = cold_ratio <= COLD_RATIO_TARGET
    warm_ok = warm <= WARM_TARGET_SECONDS
    print(f"cold step vs openssh at {top} hosts: {cold_vs_openssh:.2f}x")
    print(f"warm step vs warm paramiko channels at {top} hosts: {warm_vs_paramiko:.2f}x")
    print(
        f"target (a) cold step <= {COLD_RATIO_TARGET}x bare paramiko at {top} hosts: "
        f"{cold_ratio:.2f}x {'met' if cold_ok else 'NOT MET'}"
    )
    print(
        f"target (b) warm step <= {WARM_TARGET_SECONDS} s at {top} hosts: "
        f"{warm:.3f} s {'met' if warm_ok else 'NOT MET'}"
    )
    return cold_ok and warm_ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="1,10,50", help="comma-separated host counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--command", default="true")
    args = parser.parse_args(argv)
    counts = sorted({int(n) for n in args.hosts.split(",")})
    world_size = max(SANDBOX_HOSTS, *counts)
    state_dir = Path(tempfile.mkdtemp(prefix="runbook-bench-ssh-"))  # host users must reach it
    workdir = Path(tempfile.mkdtemp(prefix="runbook-bench-ssh-keys-"))
    try:
        start = time.perf_counter()
        info = up(hosts=world_size, state_dir=state_dir)
        print(f"sandbox of {world_size} hosts up in {time.perf_counter() - start:.1f} s")
        fx = Fixture(info, workdir, args.command)
        table = measure(fx, counts, args.rounds)
    finally:
        down(state_dir)
        for directory in (workdir, state_dir):
            for path in sorted(directory.glob("*"), reverse=True):
                path.unlink()
            if directory.exists():
                directory.rmdir()
    return 0 if report(table, args.rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
