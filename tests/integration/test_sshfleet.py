"""The SSH test hosts are real: ansible reaches the live ones and reports the dead one unreachable."""

import subprocess
import sys
from pathlib import Path

from tests.sshfleet import ansible_env


def test_live_hosts_answer_and_dead_host_is_unreachable(ssh_fleet, tmp_path):
    inventory = ssh_fleet.inventory(tmp_path / "hosts.yml")
    ansible = Path(sys.executable).parent / "ansible"
    proc = subprocess.run(
        [str(ansible), "-i", str(inventory), "all", "-m", "ping", "-o"],
        env=ansible_env(), capture_output=True, text=True, timeout=120,
    )
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    for name in ssh_fleet.hostnames():
        assert "SUCCESS" in lines[name], proc.stdout + proc.stderr
    assert "UNREACHABLE" in lines["dead1"], proc.stdout
