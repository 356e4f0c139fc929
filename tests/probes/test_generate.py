"""probes.generate: allocator A/B with real LD_PRELOAD processes on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probes import generate, result
from tests.probes.conftest import REPO, run_probe

JEMALLOC, _ = generate.find_allocator("jemalloc")
needs_jemalloc = pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc not installed (apt-get install libjemalloc2)")
# Where a glibc process's malloc resolves: libc, or the executable itself where python is not position-independent
# (ELF type ET_EXEC: Debian's python3, the H100 box's), whose canonical PLT stub is then malloc's address.
with open(os.path.realpath(sys.executable), "rb") as _exe:
    NON_PIE_PYTHON = int.from_bytes(_exe.read(18)[16:18], "little") == 2


def glibc_serves(owner: str) -> bool:
    """Whether the file that malloc's address names is where a glibc process's malloc resolves here."""
    if NON_PIE_PYTHON:
        return os.path.realpath(owner) == os.path.realpath(sys.executable)
    return os.path.basename(owner).startswith("libc")


LIBZ = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/libz.so.1"), Path("/lib64/libz.so.1")) if p.exists()), None)


def _check_in_fresh_process(env_extra: dict, allocator: str, expected: str | None) -> str:
    code = f"from probes.generate import check_allocator; print(check_allocator({allocator!r}, {expected!r}))"
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_extra}
    if "LD_PRELOAD" not in env_extra:
        env.pop("LD_PRELOAD", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_library_search_finds_jemalloc_in_the_loader_directories():
    if JEMALLOC is None:
        path, tried = generate.find_allocator("jemalloc")
        assert path is None and tried and all("jemalloc" in t for t in tried)
        return
    assert JEMALLOC.is_file() and JEMALLOC.name.startswith("libjemalloc.so")
    assert JEMALLOC.parent in generate.library_dirs()


def test_explicit_relative_library_path_is_made_absolute(tmp_path, monkeypatch):
    lib = tmp_path / "carried" / "libjemalloc.so.2"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    path, tried = generate.find_allocator("jemalloc", "carried/libjemalloc.so.2")
    assert path == lib and path.is_absolute()
    assert generate.find_allocator("jemalloc", "missing/libjemalloc.so.2")[0] is None


def test_glibc_process_is_recognised_and_a_jemalloc_claim_is_refused():
    assert _check_in_fresh_process({}, "glibc", None) == "None"
    problem = _check_in_fresh_process({}, "jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    owner = problem.split("malloc comes from ", 1)[1].split(" and ", 1)[0]
    assert glibc_serves(owner) and problem.endswith("no jemalloc is mapped"), problem


@needs_jemalloc
def test_preloaded_jemalloc_serves_malloc():
    assert _check_in_fresh_process({"LD_PRELOAD": str(JEMALLOC)}, "jemalloc", str(JEMALLOC)) == "None"
    # ...and a glibc arm that inherited the preload is caught, not counted as glibc.
    assert "malloc comes from" in _check_in_fresh_process({"LD_PRELOAD": str(JEMALLOC)}, "glibc", None)


@pytest.mark.skipif(LIBZ is None, reason="no libz.so.1 to impersonate jemalloc with")
def test_a_library_named_jemalloc_that_does_not_serve_malloc_is_refused(tmp_path):
    fake = tmp_path / "libjemalloc.so.2"
    shutil.copy(LIBZ, fake)
    problem = _check_in_fresh_process({"LD_PRELOAD": str(fake)}, "jemalloc", str(fake))
    assert problem.startswith(f"jemalloc asked for with LD_PRELOAD={fake}, but malloc comes from ")
    assert "mapped but not serving malloc" in problem


def _grun(allocator, order, calls, sha="x"):
    return generate.GenerateRun(
        allocator=allocator, order=order, malloc_from="/lib/libc.so.6", import_s=1.0, load_s=0.5, call_s=calls,
        prompt_tokens=16, new_tokens=10, rss_end_bytes=1000, peak_rss_bytes=2000, device="cpu", threads=2,
        output_sha256=sha,
    )


def test_steady_state_is_one_median_per_process_and_first_call_is_apart():
    runs = [_grun("glibc", i, [3.0, 1.0, 1.2, 1.1]) for i in range(4)]
    runs += [_grun("jemalloc", 4 + i, [2.0, 0.5, 0.6, 0.5 + 0.01 * i]) for i in range(4)]
    res = generate.analyze(runs, allocators=["glibc", "jemalloc"], libraries={"jemalloc": "/x"}, model={})
    glibc = res.allocators["glibc"]
    assert glibc.steady_state_s["samples"] == [1.1] * 4  # median of 1.0, 1.2, 1.1 in each process
    assert glibc.first_call_s["samples"] == [3.0] * 4
    assert glibc.steady_state_calls_s["n"] == 12
    assert glibc.steady_state_tokens_per_s["median"] == pytest.approx(10 / 1.1)
    cmp_ = res.comparisons["jemalloc_vs_glibc"]
    assert cmp_["steady_state_s"]["faster"] == "jemalloc"
    assert cmp_["first_call_s"]["faster"] == "jemalloc"
    assert cmp_["peak_rss_bytes"]["faster"] is None  # identical: inside noise
    assert res.outputs_identical is True
    texts = {v["name"]: v["text"] for v in generate.verdicts(res)}
    assert texts["jemalloc_vs_glibc_steady_state"].startswith("steady-state generate(): jemalloc faster by 53.2 %")
    assert texts["jemalloc_vs_glibc_peak_rss"].startswith("peak RSS (lower is better): inside noise")


def test_single_call_processes_have_no_steady_state():
    res = generate.analyze([_grun("glibc", 0, [1.0])], allocators=["glibc"], libraries={}, model={})
    steady = res.allocators["glibc"].steady_state_s
    assert steady["n"] == 0 and steady["median"] is None


@needs_jemalloc
def test_glibc_vs_jemalloc_on_the_tiny_model(tiny_model):
    proc = run_probe("generate", "--model", str(tiny_model), "--allocators", "glibc,jemalloc", "--processes", "2",
                     "--calls", "3", "--new-tokens", "8", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    result.validate(doc)
    res = doc["results"]
    assert doc["params"]["libraries"]["jemalloc"] == str(JEMALLOC)
    assert sorted(r["allocator"] for r in res["runs"]) == ["glibc", "glibc", "jemalloc", "jemalloc"]
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("probes generate: [")] == [
        "probes generate: [1/4] glibc, process 1 of 2", "probes generate: [2/4] jemalloc, process 1 of 2",
        "probes generate: [3/4] jemalloc, process 2 of 2", "probes generate: [4/4] glibc, process 2 of 2"]
    for run in res["runs"]:
        assert len(run["call_s"]) == 3 and run["new_tokens"] == 8 and run["prompt_tokens"] == 16
        assert run["first_call_s"] == run["call_s"][0]
        assert run["rss_end_bytes"] > 50e6
        if run["allocator"] == "jemalloc":
            # On a non-PIE python the address names the executable, and the probe checked with jemalloc's own
            # counter that jemalloc served a malloc() made through it (generate.check_allocator).
            served = {os.path.realpath(JEMALLOC)} | ({os.path.realpath(sys.executable)} if NON_PIE_PYTHON else set())
            assert os.path.realpath(run["malloc_from"]) in served, run["malloc_from"]
        else:
            assert glibc_serves(run["malloc_from"]), run["malloc_from"]
    assert res["outputs_identical"] is True  # greedy decoding does not depend on the allocator
    assert list(res["allocators"]) == ["glibc", "jemalloc"]
    assert res["allocators"]["glibc"]["steady_state_s"]["n"] == 2
    assert res["allocators"]["jemalloc"]["first_call_s"]["n"] == 2
    steady = res["comparisons"]["jemalloc_vs_glibc"]["steady_state_s"]
    assert steady["faster"] is None  # two processes each can never name a winner
    assert "too few samples" in steady["verdict"]


def test_an_allocator_that_was_not_loaded_is_an_error_not_a_sample(tiny_model, tmp_path):
    if LIBZ is None:
        pytest.skip("no libz.so.1 to impersonate jemalloc with")
    fake = tmp_path / "libjemalloc.so.2"
    shutil.copy(LIBZ, fake)
    proc = run_probe("generate", "--model", str(tiny_model), "--allocators", "glibc,jemalloc", "--processes", "1",
                     "--calls", "2", "--new-tokens", "4", "--jemalloc-path", str(fake), "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    result.validate(doc)
    assert [r["allocator"] for r in doc["results"]["runs"]] == ["glibc"]
    assert doc["results"]["allocators"]["jemalloc"]["first_call_s"]["n"] == 0
    assert doc["results"]["allocators"]["jemalloc"]["first_call_s"]["median"] is None
    assert len(doc["errors"]) == 1
    assert doc["errors"][0].startswith(f"jemalloc process 0 (run 1): jemalloc asked for with LD_PRELOAD={fake}")
    assert {"name": "measurement", "status": "fail", "text": "1 problem(s); see errors"} in doc["verdicts"]


def test_missing_allocator_is_reported_with_where_it_was_searched(tiny_model, tmp_path):
    proc = run_probe("generate", "--model", str(tiny_model), "--allocators", "tcmalloc", "--processes", "1",
                     "--calls", "1", "--new-tokens", "2", "--tcmalloc-path", str(tmp_path / "libtcmalloc.so.4"),
                     "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["errors"][0].startswith(f"tcmalloc requested but not found on this host; tried: {tmp_path}")
    assert doc["results"]["runs"] == []  # nothing to run, and nothing pretended
    assert doc["results"]["allocators"]["tcmalloc"]["first_call_s"]["median"] is None
    assert "steady state not measured: --calls 1" in " ".join(doc["results"]["notes"])


def test_bad_allocator_name_is_a_usage_error():
    proc = run_probe("generate", "--allocators", "glibc,mimalloc")
    assert proc.returncode == 2
    assert "each of glibc, jemalloc, tcmalloc at most once" in proc.stderr


def test_sigterm_to_the_probe_stops_its_worker_processes(tiny_model):
    import time

    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-m", "probes", "generate", "--model", str(tiny_model),
                               "--allocators", "glibc", "--processes", "3", "--calls", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        children = []
        while not children and time.monotonic() < deadline:
            children = psutil.Process(parent.pid).children(recursive=True)
            time.sleep(0.2)
        assert children, "the probe started no worker"
        parent.terminate()
        assert parent.wait(timeout=30) == 128 + 15
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"workers left running: {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()
