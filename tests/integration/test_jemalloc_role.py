"""roles/jemalloc on this machine, through real ansible-playbook over real SSH (node1 of the fleet).

The package is the real Debian libjemalloc2 (it is already installed on these machines: its file list names
the library, so the role skips the package manager altogether); the drop-ins are written into the real
/etc/systemd/system for a service name of the test's own.

systemd is not PID 1 on these machines, so no unit can be started: the role reports "verification
skipped: systemd is not running" for the service, and THIS TEST starts the process the way the unit's
Environment= would (it parses LD_PRELOAD and MALLOC_CONF out of the drop-in the role wrote), then checks
/proc/PID/maps for the library and asks the running jemalloc, through mallctl(), which options it took.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshfleet import REPO, ansible_env, run_playbook

# The jemalloc role alone, on a service, drop-in directory and ld.so.preload of the test's own: make test runs
# these beside the THP tests.
pytestmark = pytest.mark.thp_untouched

SERVICE = "preflight-jemalloc-test"
DROPIN_DIR = Path(f"/etc/systemd/system/{SERVICE}.service.d")
DROPIN = DROPIN_DIR / "60-preflight-jemalloc.conf"
DEFAULT_CONF = "background_thread:true,dirty_decay_ms:10000,muzzy_decay_ms:10000"
# An operator's own drop-in that is already there: the role must report it and leave it byte for byte.
OPERATOR_DROPIN = '[Service]\nEnvironment="MALLOC_CONF=narenas:2"'
PRELOAD = "/usr/lib/x86_64-linux-gnu/libfake-preflight.so"

APPLY = """\
- name: Apply roles/jemalloc and save its result
  hosts: all
  gather_facts: false
  roles:
    - role: jemalloc
  post_tasks:
    - name: Save preflight_role_results where the test reads it
      ansible.builtin.copy:
        content: "{{ preflight_role_results | to_nice_json }}"
        dest: "{{ result_file }}"
        mode: "0644"
      check_mode: false
      changed_when: false  # the test's own bookkeeping, not part of the role's changes
"""

# Run by /usr/bin/python3 under the drop-in's environment: prints the options jemalloc took, then waits.
PROBE = r"""
import ctypes, sys, time
lib = ctypes.CDLL(None)
def opt(name, ctype):
    value, size = ctype(), ctypes.c_size_t(ctypes.sizeof(ctype))
    rc = lib.mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0))
    return value.value if rc == 0 else f"mallctl error {rc}"
print(opt("opt.background_thread", ctypes.c_bool), opt("opt.dirty_decay_ms", ctypes.c_ssize_t),
      opt("opt.muzzy_decay_ms", ctypes.c_ssize_t), flush=True)
time.sleep(60)
"""


def library_from_dpkg() -> str:
    """The test's own answer to "where is the library": dpkg's file list, independent of the role."""
    files = subprocess.run(["dpkg-query", "-L", "libjemalloc2"], capture_output=True, text=True, check=True).stdout
    return next(line for line in files.splitlines() if re.search(r"/libjemalloc\.so\.\d+$", line))


def recap(stdout: str, host: str = "node1") -> dict[str, int]:
    match = re.search(rf"^{host}\s+:\s+(.*)$", stdout, re.M)
    assert match, stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def dropin_environment(path: Path) -> dict[str, str]:
    """Environment= lines as systemd reads them: quoted assignments, possibly several per line."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("Environment="):
            for word in shlex.split(line[len("Environment=") :]):
                key, _, value = word.partition("=")
                env[key] = value
    return env


class Sandbox:
    def __init__(self, ssh_fleet, tmp_path: Path):
        self.tmp = tmp_path
        self.state = tmp_path / "jemalloc-state"
        self.result_file = tmp_path / "result.json"
        self.preload = tmp_path / "ld.so.preload"
        self.inventory = ssh_fleet.inventory(
            tmp_path / "hosts.yml",
            extra_vars={
                "jemalloc_services": [SERVICE],
                "jemalloc_state_dir": str(self.state),
                "result_file": str(self.result_file),
            },
        )
        (tmp_path / "apply.yml").write_text(APPLY)

    def run(self, variables: dict | None = None, *args: str):
        if self.result_file.exists():
            self.result_file.unlink()
        extra = ["-e", json.dumps(variables)] if variables else []
        return run_playbook(self.tmp / "apply.yml", self.inventory, "--limit", "node1", *extra, *args)

    def rollback(self):
        """The project's playbooks/rollback.yml, this role's part of it."""
        return run_playbook("playbooks/rollback.yml", self.inventory, "--limit", "node1", "--tags", "jemalloc")

    def result(self) -> dict:
        return json.loads(self.result_file.read_text())["jemalloc"]


@pytest.fixture
def sandbox(ssh_fleet, tmp_path):
    assert not DROPIN_DIR.exists(), f"{DROPIN_DIR} is left over from an earlier run; remove it"
    box = Sandbox(ssh_fleet, tmp_path)
    yield box
    if box.state.exists():
        box.rollback()
    if DROPIN.exists():
        DROPIN.unlink()
    operator = DROPIN_DIR / "10-operator.conf"
    if operator.exists():
        operator.unlink()
    if DROPIN_DIR.exists():
        DROPIN_DIR.rmdir()


def test_dropin_preloads_jemalloc_into_a_process_started_like_the_unit(sandbox):
    library = library_from_dpkg()
    DROPIN_DIR.mkdir()
    (DROPIN_DIR / "10-operator.conf").write_text(OPERATOR_DROPIN)

    # check mode: predicts the drop-in, writes nothing
    proc = sandbox.run(None, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc.stdout)["changed"] > 0
    assert f'+Environment="LD_PRELOAD={library}"' in proc.stdout
    assert not DROPIN.exists() and not sandbox.state.exists()

    # apply: the package already in (its file list names the library: apt is not asked), the drop-in, the result
    proc = sandbox.run()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"TASK \[jemalloc : Ensure the jemalloc package is installed\][^\n]*\nskipping: \[node1\]",
                     proc.stdout)
    assert dropin_environment(DROPIN) == {"LD_PRELOAD": library, "MALLOC_CONF": DEFAULT_CONF}
    assert (DROPIN_DIR / "10-operator.conf").read_text() == OPERATOR_DROPIN
    result = sandbox.result()
    assert result["role"] == "jemalloc" and result["library_path"] == library and result["scope"] == "service"
    assert result["services"] == [
        {
            "name": SERVICE,
            "unit": f"{SERVICE}.service",
            "dropin_path": str(DROPIN),
            "changed": True,
            "verified": None,
            "verify_detail": "verification skipped: systemd is not running",
        }
    ]
    assert result["verified"] is True  # the library loaded with the drop-in's environment (role's own check)
    assert "jemalloc accepted MALLOC_CONF" in result["verify_detail"]
    assert result["persistence"] == [
        {
            "method": "systemd_dropin",
            "path": str(DROPIN),
            "state": "installed",
            "detail": f"LD_PRELOAD and MALLOC_CONF for {SERVICE}.service at every start of the service",
        }
    ]
    assert {s["name"]: s["after"] for s in result["settings"]} == {
        "package libjemalloc2": "installed",
        f"LD_PRELOAD for {SERVICE}.service": library,
        f"MALLOC_CONF for {SERVICE}.service": DEFAULT_CONF,
    }
    assert result["conflicts"] == [
        {
            "source": str(DROPIN_DIR / "10-operator.conf"),
            "setting": f"{SERVICE}.service environment",
            "value": "MALLOC_CONF=narenas:2",
            "effect": "Preflight's drop-in comes later and wins for the variables it sets",
        }
    ]

    # A process started the way the unit's Environment= would start it maps jemalloc and runs with its options.
    env = {"PATH": "/usr/bin:/bin", **dropin_environment(DROPIN)}
    child = subprocess.Popen(["/usr/bin/python3", "-c", PROBE], env=env, stdout=subprocess.PIPE, text=True)
    try:
        options = child.stdout.readline().split()
        maps = Path(f"/proc/{child.pid}/maps").read_text()
    finally:
        child.kill()
        child.wait()
    assert any(line.endswith(" " + library) for line in maps.splitlines()), maps[:2000]
    assert options == ["True", "10000", "10000"]

    # idempotence
    proc = sandbox.run()
    assert proc.returncode == 0 and recap(proc.stdout)["changed"] == 0, proc.stdout[-4000:]
    assert sandbox.result()["persistence"][0]["state"] == "unchanged"

    # rollback: our drop-in gone, the operator's byte for byte, the package kept (it was there before)
    proc = sandbox.rollback()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not DROPIN.exists()
    assert sorted(p.name for p in DROPIN_DIR.iterdir()) == ["10-operator.conf"]
    assert (DROPIN_DIR / "10-operator.conf").read_bytes() == OPERATOR_DROPIN.encode()
    assert Path(library).exists()
    assert not sandbox.state.exists()


def test_system_scope_edits_the_preload_file_and_rollback_restores_it_byte_for_byte(sandbox):
    """jemalloc_scope: system on a test-owned ld.so.preload (the real one would preload jemalloc into every
    process of this shared machine, the other tests' included)."""
    library = library_from_dpkg()
    sandbox.preload.write_text(PRELOAD)  # an entry of its own, no final newline
    variables = {"jemalloc_scope": "system", "__jemalloc_ld_so_preload": str(sandbox.preload)}

    proc = sandbox.run(variables)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sandbox.preload.read_text() == f"{PRELOAD}\n{library}\n"
    assert DROPIN.exists()
    result = sandbox.result()
    assert [p["method"] for p in result["persistence"]] == ["systemd_dropin", "ld.so.preload"]
    assert result["persistence"][1]["state"] == "installed"
    assert (
        f"{sandbox.preload} is not /etc/ld.so.preload (the file the loader reads), "
        "so no process was started to check it" in result["verify_detail"]
    )

    proc = sandbox.run({**variables, "jemalloc_enabled": False})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sandbox.preload.read_text() == f"{PRELOAD}\n"
    assert not DROPIN.exists()

    proc = sandbox.rollback()
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert sandbox.preload.read_bytes() == PRELOAD.encode()
    assert not DROPIN_DIR.exists()


def test_unknown_malloc_conf_option_is_refused_before_any_change(sandbox):
    proc = sandbox.run({"jemalloc_malloc_conf": "background_thread:true,dirty_decay:5000,muzzy_decay_ms:soon"})
    out = proc.stdout
    assert proc.returncode != 0
    assert "jemalloc: 2 problem(s) with the requested settings on node1; nothing was changed." in out
    assert (
        "- jemalloc_malloc_conf: unknown jemalloc option 'dirty_decay' (did you mean dirty_decay_ms?); "
        "known options: abort, abort_conf, background_thread, bin_shards," in out
    )
    assert (
        "- jemalloc_malloc_conf: muzzy_decay_ms:soon is not allowed; muzzy_decay_ms takes a whole number (-1 allowed)"
        in out
    )
    assert recap(out)["changed"] == 0
    assert not DROPIN_DIR.exists() and not sandbox.state.exists()

    # A real option name that this build of jemalloc was compiled without: the installed library says no.
    proc = sandbox.run({"jemalloc_malloc_conf": "utrace:true"})
    assert proc.returncode != 0
    assert (
        "- jemalloc_malloc_conf: the installed jemalloc (" + library_from_dpkg() + ") refuses it: "
        "<jemalloc>: Invalid conf pair: utrace:true" in proc.stdout
    ), proc.stdout[-3000:]
    assert not DROPIN_DIR.exists()


def test_molecule_default_scenario(tmp_path):
    """roles/jemalloc/molecule/default: converge, idempotence, verify (a process with the drop-in's environment
    maps the library), cleanup (rollback), on this machine."""
    bindir = Path(sys.executable).parent
    env = ansible_env(PATH=f"{bindir}:/usr/bin:/bin:/usr/sbin:/sbin")
    env.pop("ANSIBLE_CONFIG", None)  # molecule writes its own configuration
    # A fresh scenario state each run: molecule keeps "prepared" in ~/.ansible/tmp and would skip prepare.
    env["MOLECULE_EPHEMERAL_DIRECTORY"] = str(tmp_path / "molecule")
    proc = subprocess.run(
        [str(bindir / "molecule"), "test"],
        cwd=REPO / "roles" / "jemalloc",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert not Path("/etc/systemd/system/preflight-molecule-jemalloc.service.d").exists()
