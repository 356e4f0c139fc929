"""probes.ab: interleaved A/B of a host setting over real vLLM server starts, with a noise verdict."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from probes import ab, ab_host, result, stats
from probes.ab import PlannedStart, StartRecord, ThpSwitch
from probes.server import ServerSpec
from tests.probes.vllm_fixtures import READY_TIMEOUT_S, require_vllm

JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


class KernelFile(type(Path())):
    """A THP `enabled` file that answers as the kernel's does: writing one mode selects it, reading lists all
    modes with the selected one in brackets, anything else is refused."""

    def write_text(self, data, *args, **kwargs):
        word = data.strip()
        if word not in ab.THP_MODES:
            raise OSError(errno.EINVAL, "Invalid argument")
        return super().write_text(" ".join(f"[{m}]" if m == word else m for m in ab.THP_MODES) + "\n",
                                  *args, **kwargs)


def kernel_thp_file(path: Path, mode: str = "madvise") -> KernelFile:
    kernel = KernelFile(path)
    kernel.write_text(mode)
    return kernel


def _starts(arm_values: dict[str, list[float]], metric: str = "ready_s") -> list[StartRecord]:
    """Starts in schedule order with the given values of one metric per arm."""
    arms = list(arm_values)
    plan = ab.schedule(arms, max(len(v) for v in arm_values.values()))
    seen = dict.fromkeys(arms, 0)
    out = []
    for p in plan:
        values = arm_values[p.arm]
        if seen[p.arm] < len(values):
            rec = StartRecord(arm=p.arm, round=p.round, order=p.order, ready_s=10.0)
            setattr(rec, metric, values[seen[p.arm]])
            out.append(rec)
            seen[p.arm] += 1
    return out


# ---- the schedule ---------------------------------------------------------------------------------------


def test_two_arms_alternate_and_swap_order_every_round():
    plan = ab.schedule(["glibc", "jemalloc"], 3)
    assert [p.arm for p in plan] == ["glibc", "jemalloc", "jemalloc", "glibc", "glibc", "jemalloc"]
    assert [p.round for p in plan] == [0, 0, 1, 1, 2, 2]
    assert [p.order for p in plan] == list(range(6))


def test_three_arms_rotate_so_each_takes_each_position_once_per_three_rounds():
    plan = ab.schedule(["always", "madvise", "never"], 3)
    rounds = [[p.arm for p in plan if p.round == r] for r in range(3)]
    assert rounds == [["always", "madvise", "never"], ["madvise", "never", "always"],
                      ["never", "always", "madvise"]]
    for position in range(3):
        assert sorted(r[position] for r in rounds) == ["always", "madvise", "never"]


def test_one_repeat_runs_every_arm_once_in_the_given_order():
    assert ab.schedule(["cold", "warm"], 1) == [PlannedStart(0, 0, "cold"), PlannedStart(1, 0, "warm")]


# ---- summaries and comparisons --------------------------------------------------------------------------


def test_arm_summaries_give_median_spread_and_n_per_arm_with_units():
    starts = _starts({"glibc": [40.0, 42.0, 41.0, 43.0], "jemalloc": [30.0, 31.0, 32.0, 33.0]})
    s = ab.arm_summaries(starts, ["glibc", "jemalloc"])
    assert set(s["glibc"]) == {"ready_s"}  # nothing else was measured: left out, not zeros
    g, j = s["glibc"]["ready_s"], s["jemalloc"]["ready_s"]
    assert (g["n"], g["median"], g["unit"], g["iqr"]) == (4, 41.5, "s", 1.5)
    assert (j["n"], j["median"], j["min"], j["max"]) == (4, 31.5, 30.0, 33.0)
    assert j["samples"] == [30.0, 31.0, 32.0, 33.0]


def test_a_start_with_an_error_is_not_a_sample():
    starts = _starts({"glibc": [40.0, 41.0], "jemalloc": [30.0, 31.0]})
    starts[1].error = "jemalloc was asked for ... do not map it"
    assert ab.metric_samples(starts, "jemalloc", "ready_s") == [31.0]
    assert ab.arm_summaries(starts, ["glibc", "jemalloc"])["jemalloc"]["ready_s"]["n"] == 1


def test_clear_difference_with_four_starts_each_names_the_faster_arm():
    starts = _starts({"glibc": [40.0, 42.0, 41.0, 43.0], "jemalloc": [30.0, 31.0, 32.0, 33.0]})
    c = ab.arm_comparisons(starts, ["glibc", "jemalloc"])["jemalloc"]["ready_s"]
    assert c["faster"] == "jemalloc" and not c["inside_noise"]
    assert c["effect_pct"] == pytest.approx(100 * (41.5 - 31.5) / 41.5)
    assert c["verdict"].startswith("jemalloc faster by 24.1 % (")


def test_throughput_is_better_when_higher():
    starts = _starts({"glibc": [100.0, 101.0, 102.0, 103.0], "jemalloc": [150.0, 151.0, 152.0, 153.0]},
                     metric="output_tok_per_s")
    c = ab.arm_comparisons(starts, ["glibc", "jemalloc"])["jemalloc"]["output_tok_per_s"]
    assert c["faster"] == "jemalloc" and c["unit"] == "tok/s"
    assert c["effect_pct"] == pytest.approx(100 * (151.5 - 101.5) / 101.5)


def test_one_start_per_arm_is_never_a_winner_however_far_apart():
    starts = _starts({"glibc": [40.0], "jemalloc": [20.0]})
    c = ab.arm_comparisons(starts, ["glibc", "jemalloc"])["jemalloc"]["ready_s"]
    assert c["faster"] is None and c["inside_noise"]
    assert c["verdict"] == ("inside noise: too few samples to compare glibc and jemalloc (n=1/1; at least "
                            f"{stats.MIN_COMPARE_N} each are needed)")


def test_overlapping_starts_are_inside_noise():
    starts = _starts({"glibc": [40.0, 44.0, 41.0, 43.0], "jemalloc": [39.0, 45.0, 42.0, 40.0]})
    c = ab.arm_comparisons(starts, ["glibc", "jemalloc"])["jemalloc"]["ready_s"]
    assert c["faster"] is None and c["verdict"].startswith("inside noise: ")


def test_three_arms_are_each_compared_with_the_first_and_size_is_not_compared():
    starts = _starts({"madvise": [1.0] * 4, "always": [1.0] * 4, "never": [1.0] * 4})
    for s in starts:
        s.weights_load_gib = 2.98
    c = ab.arm_comparisons(starts, ["madvise", "always", "never"])
    assert list(c) == ["always", "never"] and list(c["always"]) == ["ready_s"]
    assert "weights_load_gib" in ab.arm_summaries(starts, ["madvise", "always", "never"])["never"]


def test_verdicts_state_n_median_spread_and_warn_on_too_few_repeats():
    starts = _starts({"glibc": [40.0, 42.0], "jemalloc": [30.0, 31.0]})
    arms = ["glibc", "jemalloc"]
    summaries, comparisons = ab.arm_summaries(starts, arms), ab.arm_comparisons(starts, arms)
    v = {x["name"]: x for x in ab.verdicts_for(starts, arms, summaries, comparisons, result, factor="allocator")}
    assert v["arm_glibc"]["text"].startswith("glibc ready_s: median 41 s, IQR 1 (2.4 %), n=2, CI of median 40-42")
    assert v["jemalloc_vs_glibc_ready_s"]["text"].startswith("ready_s: inside noise: too few samples")
    assert v["enough_repeats"]["status"] == "warn"
    assert "--repeats 4 or more" in v["enough_repeats"]["text"]


def test_a_thp_change_during_an_allocator_ab_is_flagged_as_a_confound():
    starts = _starts({"glibc": [40.0, 42.0], "jemalloc": [30.0, 31.0]})
    for s in starts:
        s.thp_enabled_at_start = s.thp_enabled_after_ready = "madvise"
    starts[-1].thp_enabled_after_ready = "always"
    arms = ["glibc", "jemalloc"]
    summaries, comparisons = ab.arm_summaries(starts, arms), ab.arm_comparisons(starts, arms)
    v = {x["name"]: x for x in ab.verdicts_for(starts, arms, summaries, comparisons, result, factor="allocator")}
    assert v["host_constant"]["text"].startswith("THP enabled was not the same in every start (always, madvise)")
    v = {x["name"] for x in ab.verdicts_for(starts, arms, summaries, comparisons, result, factor="thp")}
    assert "host_constant" not in v


# ---- host settings --------------------------------------------------------------------------------------


def test_selected_reads_the_bracketed_word():
    assert ab.selected("always [madvise] never\n") == "madvise"
    assert ab.selected("always madvise [never]\n") == "never"


def test_thp_switch_sets_verifies_and_restores_the_value_it_found(tmp_path):
    path = kernel_thp_file(tmp_path / "enabled")
    thp = ThpSwitch(path)
    assert thp.set("always") == "always"
    assert thp.original == "madvise"
    assert thp.restore() == {"path": str(path), "original": "madvise", "found": "always",
                             "written_by_someone_else": False, "final": "madvise", "restored": True, "error": None}
    assert thp.restore()["restored"] is True  # twice is harmless


def test_thp_switch_restores_over_a_value_someone_else_wrote_and_says_so(tmp_path):
    path = kernel_thp_file(tmp_path / "enabled")
    thp = ThpSwitch(path)
    thp.set("never")
    path.write_text("always\n")  # another tool on the host
    out = thp.restore()
    assert (out["found"], out["written_by_someone_else"], out["final"]) == ("always", True, "madvise")


def test_thp_switch_refusal_is_an_error_naming_the_file(tmp_path):
    thp = ThpSwitch(tmp_path)  # a directory: the write fails as a refused sysfs write would
    with pytest.raises(ab.AbError, match=rf"could not write 'always' to {tmp_path}: Is a directory"):
        thp.set("always")


def test_glibc_arm_passes_for_a_process_without_a_preloaded_allocator():
    check, problem = ab.allocator_mapping_problem("glibc", {"LD_PRELOAD": ""}, [os.getpid()])
    assert problem is None and all(not any(by_pid.values()) for by_pid in check.values())


@pytest.mark.skipif(not JEMALLOC.exists(), reason="libjemalloc2 is not installed")
def test_jemalloc_arm_is_checked_in_the_process_maps():
    proc = subprocess.Popen(["sleep", "30"], env={**os.environ, "LD_PRELOAD": str(JEMALLOC)})
    try:
        import time

        time.sleep(0.3)
        check, problem = ab.allocator_mapping_problem("jemalloc", {"LD_PRELOAD": str(JEMALLOC)}, [proc.pid])
        assert problem is None and check[str(JEMALLOC)] == {str(proc.pid): True}
        _, problem = ab.allocator_mapping_problem("glibc", {"LD_PRELOAD": ""}, [proc.pid])
        assert "the glibc arm's server processes map {'libjemalloc.so.2'" in problem
        _, problem = ab.allocator_mapping_problem("jemalloc", {"LD_PRELOAD": str(JEMALLOC)}, [os.getpid()])
        assert problem == (f"jemalloc was asked for with LD_PRELOAD={JEMALLOC}, but server processes "
                           f"['{os.getpid()}'] do not map it: this start would measure glibc")
    finally:
        proc.kill()
        proc.wait()


def test_allocator_check_looks_at_the_servers_python_processes_only():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        import sys

        assert ab.interpreter_pids([os.getpid(), proc.pid], sys.executable) == [os.getpid()]
        assert ab.interpreter_pids([proc.pid], sys.executable) == [proc.pid]  # none is Python: check them all
    finally:
        proc.kill()
        proc.wait()


def test_prime_files_reads_every_byte_of_the_model(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_bytes(b"y" * 24)
    assert ab.prime_files(tmp_path)["primed_bytes"] == 1024


def test_cold_arm_drops_the_page_cache_and_warm_arm_reads_the_model(tmp_path, monkeypatch):
    from probes import worker

    dropped = []
    monkeypatch.setattr(worker, "drop_page_cache", lambda: dropped.append(True))
    (tmp_path / "model.safetensors").write_bytes(b"w" * 4096)
    cold = ab.prepare("pagecache", "cold", thp=None, model_dir=tmp_path)
    assert dropped == [True] and cold["page_cache_dropped"] is True and cold["drop_s"] >= 0
    warm = ab.prepare("pagecache", "warm", thp=None, model_dir=tmp_path)
    assert (warm["page_cache_dropped"], warm["primed_bytes"]) == (False, 4096)
    assert ab.prepare("allocator", "jemalloc", thp=None, model_dir=tmp_path) == {}


# ---- the command line without a server ------------------------------------------------------------------


def _main_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exc:
        ab.main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_cold_page_cache_needs_drop_caches(capsys):
    err = _main_error(capsys, "--factor", "pagecache", "--model", "/nonexistent")
    assert ("cannot run this A/B:\n  the cold arm drops the host's page cache (sync; echo 3 > /proc/sys/vm/"
            "drop_caches), which slows every other process on this node for a while: add --drop-caches to allow "
            "it\n") in err


def test_every_bad_input_is_reported_at_once(capsys):
    err = _main_error(capsys, "--factor", "allocator", "--arms", "glibc,foo", "--repeats", "0",
                      "--server-env", "LD_PRELOAD=/x.so")
    assert "--arms 'glibc,foo' for --factor allocator: give at least two of glibc, jemalloc, tcmalloc" in err
    assert "--repeats 0: at least 1" in err
    assert "--server-env LD_PRELOAD=... with --factor allocator: the A/B sets LD_PRELOAD per arm" in err


def test_a_missing_allocator_says_where_it_looked(capsys):
    err = _main_error(capsys, "--factor", "allocator", "--jemalloc-path", "/nonexistent/libjemalloc.so.2")
    assert ("jemalloc is not on this host; tried /nonexistent/libjemalloc.so.2. Install it (Debian: apt-get "
            "install libjemalloc2 / libgoogle-perftools4) or give --jemalloc-path") in err


@pytest.fixture
def fake_thp(tmp_path, monkeypatch):
    """THP `enabled` as a plain file, and a fake start that records the value each start saw."""
    path = kernel_thp_file(tmp_path / "enabled")
    monkeypatch.setattr(ab_host, "THP_ENABLED", path)
    monkeypatch.setattr(ab, "spec_from_args", lambda args: ServerSpec(model=str(tmp_path)))
    return path


def _fake_start(behaviour):
    def one_start(planned, base, *, factor, env, thp, serving, log_dir):
        rec = StartRecord(arm=planned.arm, round=planned.round, order=planned.order)
        rec.setup = ab.prepare(factor, planned.arm, thp=thp, model_dir=Path(base.model))
        rec.thp_enabled_at_start = thp.read()
        behaviour(planned, rec)
        return rec
    return one_start


def test_thp_ab_writes_each_arm_and_restores_afterwards(fake_thp, monkeypatch, capsys):
    seen = []

    def ok(planned, rec):
        seen.append(rec.thp_enabled_at_start)
        rec.ready_s = {"always": 30.0, "never": 31.0}[planned.arm] + planned.round

    monkeypatch.setattr(ab, "one_start", _fake_start(ok))
    assert ab.main(["--factor", "thp", "--arms", "always,never", "--repeats", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    result.validate(doc)
    assert seen == ["always", "never", "never", "always"]
    assert ab.selected(fake_thp.read_text()) == "madvise"
    assert doc["results"]["thp_restore"]["restored"] is True
    assert doc["results"]["summaries"]["never"]["ready_s"]["samples"] == [31.0, 32.0]
    assert doc["results"]["comparisons"]["never"]["ready_s"]["faster"] is None


def test_thp_is_restored_when_a_start_fails(fake_thp, monkeypatch, capsys):
    def fails(planned, rec):
        rec.error = "vLLM exited with status 2 before it was ready"

    monkeypatch.setattr(ab, "one_start", _fake_start(fails))
    assert ab.main(["--factor", "thp", "--arms", "never,always", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    result.validate(doc)
    assert ab.selected(fake_thp.read_text()) == "madvise"
    assert len(doc["results"]["starts"]) == 1
    assert doc["errors"][0] == "start 1 (never): vLLM exited with status 2 before it was ready"
    assert {v["name"]: v["status"] for v in doc["verdicts"]}["thp_restored"] == "pass"


def test_a_later_run_continues_the_rounds_and_pools_the_starts(fake_thp, monkeypatch, capsys, tmp_path):
    seen = []

    def ok(planned, rec):
        seen.append((planned.order, planned.round, planned.arm))
        rec.ready_s = 30.0 + planned.order

    monkeypatch.setattr(ab, "one_start", _fake_start(ok))
    assert ab.main(["--factor", "thp", "--arms", "always,never", "--repeats", "1", "--json"]) == 0
    first = tmp_path / "first.json"
    first.write_text(capsys.readouterr().out)
    assert ab.main(["--factor", "thp", "--arms", "always,never", "--repeats", "1", "--json",
                    "--continue-from", str(first)]) == 0
    doc = json.loads(capsys.readouterr().out)
    result.validate(doc)
    assert seen == [(0, 0, "always"), (1, 0, "never"), (2, 1, "never"), (3, 1, "always")]
    assert doc["results"]["summaries"]["always"]["ready_s"]["samples"] == [30.0, 33.0]
    assert [s["source"] is not None for s in doc["results"]["starts"]] == [True, True, False, False]


def test_the_time_budget_stops_between_whole_rounds(fake_thp, monkeypatch, capsys):
    import time

    def slow(planned, rec):
        time.sleep(0.2)
        rec.ready_s = 1.0

    monkeypatch.setattr(ab, "one_start", _fake_start(slow))
    assert ab.main(["--factor", "thp", "--arms", "always,never", "--repeats", "3", "--time-budget-s", "0.6",
                    "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["arm"] for s in doc["results"]["starts"]] == ["always", "never"]
    assert doc["results"]["stopped_early"].startswith("time budget 0.6 s: 1 of 3 rounds ran in ")


def test_warmup_starts_run_first_and_are_not_counted(fake_thp, monkeypatch, capsys):
    def ok(planned, rec):
        rec.ready_s = 100.0 + planned.order

    monkeypatch.setattr(ab, "one_start", _fake_start(ok))
    assert ab.main(["--factor", "thp", "--arms", "always,never", "--repeats", "1", "--warmup-starts", "1",
                    "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(s["arm"], s["ready_s"]) for s in doc["results"]["warmup_starts"]] == [("always", 99.0)]
    assert doc["results"]["summaries"]["always"]["ready_s"]["samples"] == [100.0]


def test_continuing_from_a_run_with_other_settings_is_refused(fake_thp, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(ab, "one_start", _fake_start(lambda planned, rec: setattr(rec, "ready_s", 1.0)))
    assert ab.main(["--factor", "thp", "--arms", "always,never", "--repeats", "1", "--json"]) == 0
    first = tmp_path / "first.json"
    first.write_text(capsys.readouterr().out)
    err = _main_error(capsys, "--factor", "thp", "--arms", "always,never", "--enforce-eager",
                      "--continue-from", str(first))
    assert (f"--continue-from {first}: its settings differ from this run's: enforce_eager False there, True here"
            in err)


@pytest.mark.parametrize(("how", "status"), [("sigterm", 128 + signal.SIGTERM), ("ctrl_c", 130)])
def test_thp_is_restored_when_the_probe_is_interrupted(fake_thp, monkeypatch, capsys, how, status):
    def interrupted(planned, rec):
        rec.ready_s = 30.0
        if planned.order == 1:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt

    monkeypatch.setattr(ab, "one_start", _fake_start(interrupted))
    before = signal.getsignal(signal.SIGTERM)
    assert ab.main(["--factor", "thp", "--arms", "always,never", "--repeats", "2", "--json"]) == status
    doc = json.loads(capsys.readouterr().out)
    assert ab.selected(fake_thp.read_text()) == "madvise"
    assert doc["results"]["stopped_early"].startswith("interrupted by ")
    assert signal.getsignal(signal.SIGTERM) is before


# ---- real vLLM ------------------------------------------------------------------------------------------


def _run_ab(*args, timeout=1800):
    from tests.probes.conftest import run_probe

    proc = run_probe("ab", *args, "--enforce-eager", "--kv-budget", "256MiB", "--max-model-len", "2048",
                     "--ready-timeout-s", str(READY_TIMEOUT_S), "--json", timeout=timeout)
    assert proc.stdout, proc.stderr
    return proc, json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not JEMALLOC.exists(), reason="libjemalloc2 is not installed")
def test_allocator_ab_maps_jemalloc_and_calls_one_start_each_inside_noise(tiny_model):
    require_vllm()
    proc, doc = _run_ab("--factor", "allocator", "--repeats", "1", "--model", str(tiny_model),
                        "--ttft-requests", "3", "--throughput-prompts", "4", "--concurrency", "2",
                        "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    result.validate(doc)
    starts = {s["arm"]: s for s in doc["results"]["starts"]}
    assert list(starts) == ["glibc", "jemalloc"]
    mapped = starts["jemalloc"]["preload_check"][str(JEMALLOC)]
    assert mapped and all(mapped.values()), starts["jemalloc"]["preload_check"]
    assert not any(v for by_pid in starts["glibc"]["preload_check"].values() for v in by_pid.values())
    for s in starts.values():
        assert s["error"] is None and s["ready_s"] > 0 and s["weights_load_s"] is not None
        assert s["ttft_ms"] > 0 and s["output_tok_per_s"] > 0
    for metric in ("ready_s", "weights_load_s", "first_ttft_ms", "ttft_ms", "output_tok_per_s"):
        assert doc["results"]["summaries"]["jemalloc"][metric]["n"] == 1
        c = doc["results"]["comparisons"]["jemalloc"][metric]
        assert c["faster"] is None and c["verdict"].startswith("inside noise: too few samples"), c["verdict"]
    names = {v["name"]: v["status"] for v in doc["verdicts"]}
    assert names["allocator_mapped"] == "pass" and names["enough_repeats"] == "warn"


@pytest.mark.slow
@pytest.mark.kernel
def test_thp_ab_restores_the_original_value_when_the_start_fails(tiny_model):
    require_vllm()
    thp = ThpSwitch()
    if thp.problem():
        pytest.skip(thp.problem())
    original = thp.read()
    arms = [m for m in ab.THP_MODES if m != original]
    proc, doc = _run_ab("--factor", "thp", "--arms", ",".join(arms), "--repeats", "1", "--model", str(tiny_model),
                        "--server-arg=--no-such-flag")
    assert thp.read() == original
    assert proc.returncode == 1
    result.validate(doc)
    restore = doc["results"]["thp_restore"]
    assert (restore["original"], restore["final"], restore["restored"]) == (original, original, True)
    (start,) = doc["results"]["starts"]  # the first failure stops the A/B
    assert start["setup"] == {"thp_enabled_written": arms[0]} and start["thp_enabled_at_start"] == arms[0]
    assert start["error"].startswith("vLLM exited with status")
    assert doc["errors"][0].startswith(f"start 1 ({arms[0]}): vLLM exited with status")
