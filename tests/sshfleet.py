"""Real SSH test hosts: one sshd process per loopback address (127.0.0.N), key auth as root.

All hosts share this machine's kernel, so a THP write through one is a write on all; tests
that tune must expect that. An "unreachable" host is an inventory entry with an address where
nothing listens.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SSHD = "/usr/sbin/sshd"
# An unprivileged login for become tests: a system user with a home, the test key and a sudo rule.
OPERATOR_USER = "preflight-op"
OPERATOR_SUDOERS = Path("/etc/sudoers.d/preflight-test-operator")
REPO = Path(__file__).resolve().parent.parent
# What the tests' processes get on this VM, whose 2 cores both lanes of make test share:
# - VLLM_ENABLE_V1_MULTIPROCESSING=0: vLLM's CPU platform puts its model worker in a third process (API server,
#   engine core, worker), each importing vllm and torch, about 9 of a start's 40 CPU-s; with this the worker runs
#   inside the engine core, the shape vLLM has on one GPU. The probes start, measure and stop the same process
#   group either way.
# - OMP_NUM_THREADS=1: one torch thread per process (vLLM's worker had one, bound to a core). Two OpenMP threads
#   spin while the other lane holds the second core: the ttft tests took 122 CPU-s with them, 80 with one, 108
#   as vLLM started them before (one core kept busy beside them, as make test's other lane does).
# The test hosts' SSH sessions get these (SetEnv below); tests/conftest.py puts them in the tests' own environment.
TEST_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _wait_for_port(address: str, port: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd on {address}:{port} did not start listening within {deadline_s} s")


@dataclass
class SshFleet:
    """sshd instances on 127.0.0.N, started and stopped by the tests themselves."""

    workdir: Path
    addresses: list[str]
    unreachable: list[str] = field(default_factory=list)
    port: int = 0
    pids: list[int] = field(default_factory=list)

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    def hostnames(self) -> list[str]:
        return [f"node{i + 1}" for i in range(len(self.addresses))]

    def start(self) -> SshFleet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        host_key = self.workdir / "host_key"
        if not host_key.exists():
            for key in (host_key, self.client_key):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        authorized = self.workdir / "authorized_keys"
        authorized.write_text((self.workdir / "client_key.pub").read_text())
        Path("/run/sshd").mkdir(exist_ok=True)
        for address in self.addresses:
            pidfile = self.workdir / f"sshd-{address}.pid"
            config = self.workdir / f"sshd-{address}.conf"
            config.write_text(
                "\n".join(
                    [
                        f"ListenAddress {address}",
                        f"Port {self.port}",
                        f"HostKey {host_key}",
                        f"AuthorizedKeysFile {authorized}",
                        f"PidFile {pidfile}",
                        "PermitRootLogin prohibit-password",
                        "PasswordAuthentication no",
                        "UsePAM no",
                        "StrictModes no",
                        "MaxSessions 50",
                        "MaxStartups 50:30:100",
                        f"Subsystem sftp {_sftp_server()}",
                        # The controller's Python environment, so modules run where the test installed deps.
                        "AcceptEnv LANG LC_*",
                        # Debian's bash runs ~/.bashrc for every command sshd starts, unless it is a nested
                        # shell. This VM's root .bashrc runs `pyenv init` with no early return for
                        # non-interactive shells (a stock one has it): 130 ms CPU per task, a third of a
                        # module's cost. SHLVL=1 makes the test hosts behave like a node with a stock .bashrc.
                        # TEST_PROCESS_ENV (above): what a probe started over SSH runs with.
                        "SetEnv SHLVL=1 " + " ".join(f"{k}={v}" for k, v in TEST_PROCESS_ENV.items()),
                        # The unprivileged operator login (operator_user()): sshd reads authorized keys as
                        # that user, who cannot read the test's workdir, so its key sits in its own home.
                        f"Match User {OPERATOR_USER}",
                        "    AuthorizedKeysFile .ssh/authorized_keys",
                        "",
                    ]
                )
            )
            try:
                subprocess.run([SSHD, "-f", str(config)], check=True)
                _wait_for_port(address, self.port)
                self.pids.append(_read_pid(pidfile))
            except Exception:
                self.stop()  # never leave the hosts that did start behind
                raise
        return self

    def stop(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.pids.clear()

    def inventory(self, path: Path, group: str = "fleet", extra_vars: dict | None = None) -> Path:
        """Write a YAML inventory of the live hosts (node1..) plus the unreachable ones (dead1..)."""
        common = {
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            "-o ConnectTimeout=5",
            # The node's Python: the interpreter running the tests has every module dependency.
            "ansible_python_interpreter": sys.executable,
        }
        # Every test host is this one machine: each gets a run lock and a node_exporter textfile directory of its
        # own (a real node has them), so that tests run side by side (make test) never share either.
        hosts = {name: {"ansible_host": addr, "preflight_lock_file": str(self.workdir / "locks" / f"{name}.lock"),
                        "preflight_textfile_dir": str(self.workdir / "textfile" / name)}
                 for name, addr in zip(self.hostnames(), self.addresses, strict=True)}
        for i, addr in enumerate(self.unreachable):
            hosts[f"dead{i + 1}"] = {"ansible_host": addr}
        doc = {"all": {"vars": {**common, **(extra_vars or {})}, "children": {group: {"hosts": hosts}}}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path


def _read_pid(pidfile: Path, deadline_s: float = 10.0) -> int:
    """sshd writes its PidFile shortly after it starts listening: wait for it."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text:
            return int(text)
        time.sleep(0.05)
    raise RuntimeError(f"sshd did not write {pidfile} within {deadline_s} s")


def _sftp_server() -> str:
    for candidate in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server"):
        if os.path.exists(candidate):
            return candidate
    return "internal-sftp"


def ansible_env(**extra: str) -> dict[str, str]:
    """Environment for running ansible-playbook from the repo against test hosts."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bindir}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra)
    return env


def run_module_here(module: str, args: dict, *flags: str) -> tuple[str, dict, str]:
    """Run one module of the project on this machine with the real `ansible` (local connection); returns the
    status word (SUCCESS, CHANGED, FAILED!), the result and the whole output."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", "-m", module, "-a", json.dumps(args), *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=ansible_env(ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="default",
                        ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_CALLBACK_FORMAT_PRETTY="false"),
    )
    output = proc.stdout + proc.stderr
    for line in proc.stdout.splitlines():
        if line.startswith("localhost | "):
            status, _, payload = line[len("localhost | "):].partition(" => ")
            return status.strip(), json.loads(payload), output
    raise AssertionError(f"no result line in:\n{output}")


def run_playbook(
    playbook: str | Path,
    inventory: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    serial: str | None = "0",
) -> subprocess.CompletedProcess:
    """Run the real ansible-playbook; returns the completed process (stdout and stderr kept).

    The test hosts run as one batch (`preflight_serial=0`): a real fleet's default rolls 25 % of its hosts at a
    time, which on the 3 test hosts means one host after the other and twice the wall time. A test of batching
    passes its own `-e preflight_serial=...` or `serial=None` for the project's default."""
    bindir = Path(sys.executable).parent
    if serial is not None and not any(a.startswith("preflight_serial=") for a in args):
        args = (*args, "-e", f"preflight_serial={serial}")
    cmd = [str(bindir / "ansible-playbook"), "-i", str(inventory), str(REPO / playbook), *args]
    return subprocess.run(
        cmd, cwd=REPO, env=env or ansible_env(), capture_output=True, text=True, timeout=timeout
    )


@dataclass
class OperatorUser:
    """The unprivileged SSH login of become tests, as operator_user() left it."""

    name: str
    home: Path

    def inventory_vars(self, become: bool) -> dict:
        """Connection variables for a group of hosts that log in as this user, with or without become."""
        return {"ansible_user": self.name, "ansible_become": become}


def operator_user(client_key: Path, name: str = OPERATOR_USER) -> OperatorUser:
    """Create (idempotently) an unprivileged system user that logs in with the test key and may sudo as root
    without a password (a sudoers.d drop-in, checked with visudo before it is installed).

    The test sshd processes run as root, so they can log this user in; their configuration points its
    authorized keys at ~/.ssh/authorized_keys. remove_operator_user() takes user, home and drop-in away.
    """
    if not Path("/usr/bin/sudo").exists():
        raise RuntimeError("sudo is not installed: run `make system-deps` (become tests escalate with sudo)")
    exists = subprocess.run(["id", "-u", name], capture_output=True).returncode == 0
    if not exists:
        subprocess.run(
            ["useradd", "--system", "--create-home", "--home-dir", f"/var/lib/{name}", "--shell", "/bin/sh", name],
            check=True,
        )
    # useradd leaves the password "!" (locked); sshd without PAM refuses a locked account even for a key.
    # "*": no password can ever match, and the account is not locked.
    subprocess.run(["usermod", "--password", "*", name], check=True)
    home = Path(subprocess.run(["getent", "passwd", name], capture_output=True, text=True, check=True)
                .stdout.split(":")[5])
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(Path(f"{client_key}.pub").read_text())
    keys.chmod(0o600)
    subprocess.run(["chown", "-R", f"{name}:", str(ssh_dir)], check=True)
    staged = OPERATOR_SUDOERS.with_name(f".{OPERATOR_SUDOERS.name}.new")
    staged.write_text(f"# Written by Preflight's tests (tests/sshfleet.py); removed at the end of the session.\n"
                      f"{name} ALL=(ALL) NOPASSWD: ALL\n")
    staged.chmod(0o440)
    subprocess.run(["visudo", "-cq", "-f", str(staged)], check=True)
    staged.replace(OPERATOR_SUDOERS)
    return OperatorUser(name=name, home=home)


def remove_operator_user(user: OperatorUser) -> None:
    """Take away the sudo rule, the user and its home (the name is the tests' own; one left behind by an
    interrupted session is reused by operator_user() and removed here)."""
    OPERATOR_SUDOERS.unlink(missing_ok=True)
    subprocess.run(["userdel", "--remove", user.name], capture_output=True)
