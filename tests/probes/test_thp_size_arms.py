"""THP A/B arms with per-size settings (issue 19): `python -m probes ab --factor thp` over a copy of a sysfs
tree whose files answer as the kernel's do (fast; the vLLM start is a stand-in, the point is what is written
and put back), and - marker `kernel` - the real knobs of this kernel (6.18: hugepages-16kB ... 2048kB): an arm's
owner killed outright, the A/B's switch, and the load probe on the tiny model run under a per-size arm, which
names the arm in its result. Every real knob is compared with its value before the test, byte for byte."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from probes import ab, ab_host, result
from probes.ab import StartRecord, ThpSwitch
from probes.core import thp_arm
from probes.server import ServerSpec
from tests.probes.conftest import REPO, run_probe

THP = Path("/sys/kernel/mm/transparent_hugepage")
SIZE_CHOICES = ("always", "inherit", "madvise", "never")


class KernelKnob(type(Path())):
    """A THP `enabled` file that answers as the kernel's does: writing one of its choices selects it, reading
    lists all with the selected one in brackets, anything else is refused. The global knob has no inherit."""

    def choices(self) -> tuple[str, ...]:
        return SIZE_CHOICES if self.parent.name.startswith("hugepages-") else ab.THP_MODES

    def write_text(self, data, *args, **kwargs):
        word = data.strip()
        if word not in self.choices():
            raise OSError(errno.EINVAL, "Invalid argument")
        return super().write_text(" ".join(f"[{m}]" if m == word else m for m in self.choices()) + "\n",
                                  *args, **kwargs)


@pytest.fixture
def sysfs_copy(tmp_path, monkeypatch):
    """THP's directory under a temporary root: madvise; 64kB never, 2048kB inherit (as this VM boots)."""
    base = tmp_path / "root" / str(THP).lstrip("/")
    knobs = {"enabled": "madvise", "hugepages-64kB/enabled": "never", "hugepages-2048kB/enabled": "inherit"}
    for name, value in knobs.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        KernelKnob(base / name).write_text(value)
    monkeypatch.setattr(ab_host, "THP_ENABLED", KernelKnob(base / "enabled"))
    monkeypatch.setattr(ab, "spec_from_args", lambda args: ServerSpec(model=str(tmp_path)))
    return base


def _values(base: Path) -> dict[str, str | None]:
    return {name: ab.selected((base / name / "enabled").read_text()) if name != "." else
            ab.selected((base / "enabled").read_text()) for name in (".", "hugepages-64kB", "hugepages-2048kB")}


def test_each_start_runs_the_hosts_thp_changed_by_its_arm_only_and_all_is_put_back(sysfs_copy, monkeypatch,
                                                                                  capsys):
    seen = {}

    def one_start(planned, base, *, factor, env, thp, serving, log_dir):
        rec = StartRecord(arm=planned.arm, round=planned.round, order=planned.order, ready_s=1.0)
        rec.setup = ab.prepare(factor, planned.arm, thp=thp, model_dir=Path(base.model))
        seen[planned.arm] = _values(sysfs_copy)
        return rec

    monkeypatch.setattr(ab, "one_start", one_start)
    arms = "madvise,64kB=always,2048kB=never+never"
    assert ab.main(["--factor", "thp", "--arms", arms, "--repeats", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["results"]["arms"] == ["madvise", "64kB=always", "never+2048kB=never"]  # written in one order
    assert seen == {
        "madvise": {".": "madvise", "hugepages-64kB": "never", "hugepages-2048kB": "inherit"},
        "64kB=always": {".": "madvise", "hugepages-64kB": "always", "hugepages-2048kB": "inherit"},
        "never+2048kB=never": {".": "never", "hugepages-64kB": "never", "hugepages-2048kB": "never"},
    }
    assert _values(sysfs_copy) == {".": "madvise", "hugepages-64kB": "never", "hugepages-2048kB": "inherit"}
    assert doc["results"]["thp_arm_settings"]["never+2048kB=never"] == {"enabled": "never", "2048kB": "never"}
    start = next(s for s in doc["results"]["starts"] if s["arm"] == "64kB=always")
    assert start["setup"] == {"thp_enabled_written": "madvise", "thp_sizes_written": {"64kB": "always",
                                                                                        "2048kB": "inherit"}}
    restore = doc["results"]["thp_restore"]
    assert (restore["original"], restore["final"], restore["restored"]) == (
        "madvise+64kB=never+2048kB=inherit", "madvise+64kB=never+2048kB=inherit", True)
    assert {v["name"]: v["status"] for v in doc["verdicts"]}["thp_restored"] == "pass"


def test_a_size_the_kernel_does_not_offer_is_refused_before_anything_is_written(sysfs_copy, capsys):
    before = {path: path.read_text() for path in sysfs_copy.rglob("enabled")}
    with pytest.raises(SystemExit) as exit_:
        ab.main(["--factor", "thp", "--arms", "madvise,32kB=always,64kB=sometimes", "--json"])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--arms: 'sometimes' is not a setting of size 64kB; allowed: always, inherit, madvise, never" in err
    assert "--arms: size '32kB' is not offered by this kernel; allowed sizes: 64kB, 2048kB" in err
    assert {path: path.read_text() for path in sysfs_copy.rglob("enabled")} == before


def test_a_start_whose_size_knob_someone_else_wrote_is_not_a_sample(sysfs_copy, monkeypatch):
    thp = ThpSwitch(arms=["madvise", "64kB=always"])
    thp.set("64kB=always")
    KernelKnob(sysfs_copy / "hugepages-64kB" / "enabled").write_text("madvise")  # another tool on the host
    assert thp.drift("64kB=always") == (f"{sysfs_copy}/hugepages-64kB/enabled from 'always' to 'madvise'")
    out = thp.restore()
    assert (out["found"], out["written_by_someone_else"], out["final"]) == (
        "madvise+64kB=madvise", True, "madvise+64kB=never")


# ---- the real kernel --------------------------------------------------------------------------------------
def _knobs() -> list[Path]:
    return [THP / "enabled", *sorted(THP.glob("hugepages-*/enabled"))]


@pytest.fixture
def real_sizes():
    """This kernel's THP knobs, each put back (and compared) as it was whatever the test did."""
    if not (THP / "hugepages-64kB" / "enabled").exists() or thp_arm.owner() is not None:
        pytest.skip("needs per-size THP (Linux 6.8+) and no A/B arm held on this host")
    before = {path: path.read_text() for path in _knobs()}
    yield before
    for path, text in before.items():
        if path.read_text() != text:
            path.write_text(ab.selected(text))
    assert {path: path.read_text() for path in _knobs()} == before


def _other(current: str, choices=SIZE_CHOICES) -> str:
    return next(c for c in ("always", "never", "madvise") if c != current and c in choices)


OWNER = textwrap.dedent("""
    import time
    from probes.core import thp_arm
    with thp_arm.ThpArm({arm!r}, probe="test_size_arm", marker={marker!r}):
        print("set", flush=True)
        time.sleep(300)
""")


@pytest.mark.kernel
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_per_size_arm_is_put_back_when_its_owner_is_killed_or_stopped(tmp_path, real_sizes, sig):
    v64, v2048 = (ab.selected(real_sizes[THP / f"hugepages-{s}" / "enabled"]) for s in ("64kB", "2048kB"))
    arm = f"never+64kB={_other(v64)}+2048kB={_other(v2048)}"
    marker = tmp_path / "thp-ab.json"
    proc = subprocess.Popen([sys.executable, "-c", OWNER.format(arm=arm, marker=str(marker))], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "set"
    assert thp_arm.live_settings()["sizes"]["64kB"] == _other(v64)
    assert json.loads(marker.read_text())["settings"] == thp_arm.parse_arm(arm)[0]
    proc.send_signal(sig)
    proc.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and ({p: p.read_text() for p in _knobs()} != real_sizes or marker.exists()):
        time.sleep(0.1)
    assert {path: path.read_text() for path in _knobs()} == real_sizes and not marker.exists()


@pytest.mark.kernel
def test_the_ab_switch_writes_real_size_knobs_and_puts_them_back(real_sizes):
    v64 = ab.selected(real_sizes[THP / "hugepages-64kB" / "enabled"])
    arms = [f"64kB={_other(v64)}", "never"]
    thp = ThpSwitch(arms=arms)
    assert thp.set(arms[0]) == arms[0]
    assert thp_arm.live_settings()["sizes"]["64kB"] == _other(v64)
    thp.set("never")  # the next arm: 64kB back to its own value, THP enabled never
    assert thp_arm.live_settings()["sizes"]["64kB"] == v64 and thp_arm.live_settings()["enabled"] == "never"
    assert thp.restore()["restored"] is True


@pytest.mark.kernel
@pytest.mark.slow
def test_the_load_probe_run_under_a_per_size_arm_names_the_arm_and_thp_is_back(tiny_model, real_sizes):
    v64 = ab.selected(real_sizes[THP / "hugepages-64kB" / "enabled"])
    arm = f"64kB={_other(v64)}+2048kB=never"
    started = time.monotonic()
    with thp_arm.ThpArm(arm, probe="thp_ab_test") as held:
        proc = run_probe("load", "--model", str(tiny_model), "--repeats", "1", "--read-repeats", "1", "--json")
    v2048 = ab.selected(real_sizes[THP / "hugepages-2048kB" / "enabled"])
    assert held.restored == {"mode": f"64kB={v64}+2048kB={v2048}", "ok": True}
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    result.validate(doc)
    thp = doc["results"]["thp"]
    assert thp["arm"]["mode"] == arm and thp["arm"]["settings"] == {"64kB": _other(v64), "2048kB": "never"}
    assert thp["arm"]["probe"] == "thp_ab_test" and thp["changed_during_runs"] is False
    assert (thp["sizes"]["64kB"], thp["sizes"]["2048kB"]) == (_other(v64), "never")
    print(f"load under a per-size arm: {time.monotonic() - started:.1f} s")
