"""THP A/B arms with per-size settings (core/thp_arm.py): the one syntax, checked once; the plan's arms and
result names (core/plan.py); an arm the node's kernel cannot take refused before anything is written; the
report naming each arm by its settings. On plain values and on files under a temporary root (a copy of a
sysfs tree) - the real kernel's knobs are written by tests/probes/test_thp_size_arms.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.moduleutils import module_util
from tests.unit import report_samples as s

thp_arm = module_util("preflight.core.thp_arm")
plan = module_util("preflight.core.plan")
metrics = module_util("preflight.report.metrics")
charts = module_util("preflight.report.charts")

BASE = "/sys/kernel/mm/transparent_hugepage"
# What a 6.18 kernel offers: sizes with an 'enabled' knob and their choices (read_sizes / node_facts shape).
SIZES = {size: {"choices": ["always", "inherit", "madvise", "never"]} for size in ("16kB", "64kB", "2048kB")}
ALLOWED_FORM = ("allowed: always, madvise, never (THP enabled, every size that inherits it), or <size>=<value> "
                "with a page size such as 64kB and a value of always, inherit, madvise, never; several joined by "
                "'+', each knob once (e.g. never+64kB=always)")


@pytest.mark.parametrize(("text", "settings", "written", "slug"), [
    ("never", {"enabled": "never"}, "never", "never"),
    ("64kB=always", {"64kB": "always"}, "64kB=always", "64kb_always"),
    ("2048kB=never+64kB=always", {"64kB": "always", "2048kB": "never"}, "64kB=always+2048kB=never",
     "64kb_always_2048kb_never"),
    (" 64kB = always + madvise ", {"enabled": "madvise", "64kB": "always"}, "madvise+64kB=always",
     "madvise_64kb_always"),
])
def test_an_arm_is_read_into_settings_written_in_one_order_and_named(text, settings, written, slug):
    got, errors = thp_arm.parse_arm(text, "thp_mode", SIZES)
    assert errors == []
    assert got == settings and list(got) == list(settings)  # the global mode first, then sizes smallest first
    assert thp_arm.arm_text(got) == written
    assert thp_arm.arm_slug(got) == slug


@pytest.mark.parametrize(("text", "sizes", "error"), [
    ("sometimes", None, f"arms: 'sometimes' is not allowed; {ALLOWED_FORM}"),
    ("2048kB=never,64kB=always", None,
     f"arms: '2048kB=never,64kB=always': the settings of one arm are joined by '+', not ','; {ALLOWED_FORM}"),
    ("64KB=always", None, f"arms: '64KB' in '64KB=always' is not a page size (write it as the kernel does: 64kB); "
                          f"{ALLOWED_FORM}"),
    ("64kB=sometimes", None, "arms: 'sometimes' is not a setting of size 64kB; allowed: always, inherit, madvise, "
                             "never"),
    ("never+64kB=inherit+64kB=never", None, "arms: 'never+64kB=inherit+64kB=never': sets size 64kB twice"),
    ("never+always", None, "arms: 'never+always': sets THP enabled twice"),
    ("never+4kB=always", SIZES, "arms: 'never+4kB=always': size '4kB' is not offered by this kernel; allowed "
                                "sizes: 16kB, 64kB, 2048kB"),
    ("64kB=always", {}, "arms: this kernel has no per-size THP knobs (/sys/kernel/mm/transparent_hugepage/"
                        "hugepages-<N>kB/enabled, Linux 6.8 and later), so '64kB=always' cannot be set; allowed: "
                        "always, madvise, never"),
    ("64kB=inherit", {"64kB": {"choices": ["always", "madvise", "never"]}},
     "arms: 'inherit' is not a setting of size 64kB; allowed: always, madvise, never"),
])
def test_a_bad_arm_is_refused_naming_the_option_and_what_is_allowed(text, sizes, error):
    assert thp_arm.parse_arm(text, "arms", sizes) == ({}, [error])


def test_a_yaml_boolean_is_not_a_mode():
    settings, errors = thp_arm.parse_arm(False, "probe_plan.thp_ab.thp_modes")
    assert settings == {} and errors == [
        f"probe_plan.thp_ab.thp_modes: 'False' is a YAML boolean, not a word (quote it); {ALLOWED_FORM}"]


def test_every_bad_setting_of_an_arm_is_named_at_once():
    assert len(thp_arm.parse_arm("sometimes+64kB=maybe+3MB=always", "x")[1]) == 3


# --- the plan ---------------------------------------------------------------------------------------------
def test_the_plan_runs_one_load_per_arm_named_by_its_settings():
    entry = {"probe": "load", "levels": ["full"], "thp_modes": ["madvise", "64kB=always", "2048kB=never+never"]}
    assert plan.plan_errors("full", {"quick": 60, "standard": 900, "full": 3600}, "tiny", {"thp_ab": entry}) == []
    run = plan.plan_probes("full", {"thp_ab": entry})["run"]
    assert [(item["name"], item["thp_mode"]) for item in run] == [
        ("thp_ab_madvise", "madvise"),
        ("thp_ab_64kb_always", "64kB=always"),
        ("thp_ab_never_2048kb_never", "never+2048kB=never"),
    ]


def test_the_plan_refuses_bad_and_repeated_arms_before_anything_runs():
    entry = {"probe": "load", "levels": ["full"],
             "thp_modes": ["64kB=always+never", "never+64kB=always", "64kB=often"]}
    assert plan.entry_errors("thp_ab", entry) == [
        "probe_plan.thp_ab.thp_modes: 'never+64kB=always' sets what '64kB=always+never' sets; give each arm once",
        "probe_plan.thp_ab.thp_modes: 'often' is not a setting of size 64kB; allowed: always, inherit, madvise, never",
    ]


def _facts(sizes: dict) -> dict:
    return {"thp": {"supported": True, "enabled": "madvise", "sizes": sizes}, "gpus": []}


def test_a_node_whose_kernel_lacks_an_arms_size_skips_that_arm_with_the_reason():
    entry = {"probe": "load", "levels": ["full"], "thp_modes": ["never", "32kB=always", "64kB=always"]}
    planned = plan.plan_probes("full", {"thp_ab": entry})
    run = plan.run_record(planned, "full", {"full": 3600}, "now")
    got, record = plan.for_node(planned, run, _facts(SIZES), {"thp_ab": entry})
    assert [item["name"] for item in got["run"]] == ["thp_ab_never", "thp_ab_64kb_always"]
    assert record["skipped"] == [{"probe": "thp_ab_32kb_always", "reason": (
        "skipped: probe_plan.thp_ab.thp_modes: size '32kB' is not offered by this kernel; allowed sizes: 16kB, "
        "64kB, 2048kB")}]
    # A kernel before 6.8: every per-size arm is skipped, the global one runs.
    got, record = plan.for_node(planned, run, _facts({}), {"thp_ab": entry})
    assert [item["name"] for item in got["run"]] == ["thp_ab_never"]
    assert [skip["probe"] for skip in record["skipped"]] == ["thp_ab_32kb_always", "thp_ab_64kb_always"]


# --- the arm's owner on the node: nothing is written when the kernel cannot take the arm --------------------
def _sysfs_copy(tmp_path: Path, sizes: dict[str, str]) -> dict[Path, str]:
    files = {tmp_path / BASE.lstrip("/") / "enabled": "always [madvise] never\n"}
    files.update({tmp_path / BASE.lstrip("/") / f"hugepages-{size}" / "enabled": text for size, text in sizes.items()})
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return files


@pytest.mark.parametrize(("arm", "sizes", "error"), [
    ("never+4kB=always", {"64kB": "always inherit madvise [never]\n"},
     "thp_mode: 'never+4kB=always': size '4kB' is not offered by this kernel; allowed sizes: 64kB; "
     "THP was not changed"),
    ("64kB=always", {}, "thp_mode: this kernel has no per-size THP knobs (/sys/kernel/mm/transparent_hugepage/"
                        "hugepages-<N>kB/enabled, Linux 6.8 and later), so '64kB=always' cannot be set; allowed: "
                        "always, madvise, never; THP was not changed"),
])
def test_an_arm_the_kernel_cannot_take_is_refused_before_any_write(tmp_path, arm, sizes, error):
    files = _sysfs_copy(tmp_path / "root", sizes)
    marker = tmp_path / "run" / "thp-ab.json"
    with pytest.raises(thp_arm.ThpArmError) as err, thp_arm.ThpArm(arm, root=str(tmp_path / "root"),
                                                                    marker=str(marker)):
        pass
    assert str(err.value) == error
    assert {path: path.read_text() for path in files} == files and not marker.exists()


def test_a_malformed_arm_is_refused_when_the_owner_is_made():
    with pytest.raises(thp_arm.ThpArmError, match=r"^thp_mode: '64kB=always,never': the settings of one arm"):
        thp_arm.ThpArm("64kB=always,never")


# --- the report names each arm by its settings ---------------------------------------------------------------
def _arm_probe(warm_s: float, arm: str | None) -> dict:
    probe = s.load_probe(warm_s=(15.0, warm_s), spread=0.02)
    if arm is not None:
        settings = thp_arm.parse_arm(arm)[0]
        probe["results"]["thp"] = {"enabled": "madvise", "sizes": {}, "changed_during_runs": False,
                                   "arm": {"mode": arm, "settings": settings, "original": "madvise",
                                           "probe": "thp_ab"}}
    return probe


def test_a_per_size_arm_is_named_by_its_settings_and_never_taken_for_a_global_mode(tmp_path):
    probes = {"thp_ab_madvise": _arm_probe(0.90, "madvise"), "thp_ab_64kb_always": _arm_probe(0.50, "64kB=always"),
              "thp_ab_never": _arm_probe(0.95, None)}
    assert metrics.thp_ab_arm("thp_ab_64kb_always", probes["thp_ab_64kb_always"]) == ("64kB=always", None)
    assert metrics.thp_ab_arm("thp_ab_madvise", probes["thp_ab_madvise"]) == ("madvise", "madvise")
    assert metrics.thp_ab_arm("thp_ab_never", probes["thp_ab_never"]) == ("never", "never")  # an older result
    doc = s.one(s.host("node1", probes=probes), tmp_path)
    # The 64kB arm is faster beyond noise, but it is no thp_enabled policy: nothing says "set always".
    assert not [r for r in doc["recommendations"] if r["variable"] == "thp_enabled"]
    load = next(section for section in charts.sections(doc) if section["probe"] == "load")
    ab_chart = next(chart for chart in load["charts"] if "THP A/B" in chart)
    assert "THP 64kB=always" in ab_chart and "THP madvise" in ab_chart
