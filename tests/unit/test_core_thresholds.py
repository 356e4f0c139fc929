"""core/thresholds.py is the one place for thresholds and the outlier score: the project defaults
(roles/preflight_defaults/defaults/main.yml) document the same values, and every group file's overrides are valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.moduleutils import module_util

thresholds = module_util("preflight.core.thresholds")
REPO = Path(__file__).resolve().parents[2]
PROJECT_DEFAULTS = REPO / "roles" / "preflight_defaults" / "defaults" / "main.yml"
GROUP_VARS = REPO / "inventory" / "group_vars"


def all_yml() -> dict:
    return yaml.safe_load(PROJECT_DEFAULTS.read_text())


def test_group_vars_document_every_threshold_with_the_built_in_defaults():
    assert all_yml()["preflight_thresholds"] == thresholds.DEFAULTS


def test_group_vars_outlier_values_are_the_built_in_ones():
    documented = all_yml()
    assert documented["preflight_outlier_score"] == thresholds.OUTLIER_SCORE
    assert documented["preflight_outlier_min_relative"] == thresholds.OUTLIER_MIN_RELATIVE


def test_every_numeric_threshold_has_a_direction_a_default_and_advice_only_for_known_keys():
    assert set(thresholds.NUMERIC) == set(thresholds.DEFAULTS) - {"gpu_count"}
    assert {d for d, _unit, _meaning in thresholds.NUMERIC.values()} == {"max", "min"}
    assert set(thresholds.ADVICE) <= set(thresholds.NUMERIC)


def test_every_group_file_has_valid_thresholds():
    files = [PROJECT_DEFAULTS, *sorted(GROUP_VARS.glob("*.yml"))]
    overrides = {f.name: (yaml.safe_load(f.read_text()) or {}).get("preflight_thresholds") for f in files}
    assert any(overrides.values())
    for name, value in overrides.items():
        if value is not None:
            try:
                thresholds.resolve(value)
            except thresholds.ThresholdError as exc:
                pytest.fail(f"group_vars/{name}: {exc}")


def test_every_bad_override_is_reported_at_once_naming_the_key():
    with pytest.raises(thresholds.ThresholdError) as exc:
        thresholds.resolve(
            {"gpu_count": -1, "ttft_hot_ms": {}, "ttft_warm_ms": {"warn": "fast"}, "kv_max_concurrency": 3}
        )
    assert str(exc.value) == (
        "preflight_thresholds.gpu_count must be a whole number or null, got -1; "
        "preflight_thresholds.ttft_hot_ms is not a known threshold (known: "
        + ", ".join(sorted(thresholds.DEFAULTS))
        + "); preflight_thresholds.ttft_warm_ms.warn must be a number or null, got 'fast'; "
        "preflight_thresholds.kv_max_concurrency must be a mapping with 'warn' and/or 'fail', got 3"
    )


def test_judge_respects_the_direction_and_a_switched_off_level():
    th = thresholds.resolve({"spread_iqr_fraction": {"warn": 0.1, "fail": None}})
    assert thresholds.judge(0.2, "spread_iqr_fraction", th)[0] == "warn"
    assert thresholds.judge(0.5, "kv_max_concurrency", th)[0] == "fail"
    assert thresholds.judge(None, "kv_max_concurrency", th)[0] == "skip"
    assert thresholds.judge(9, "kv_max_concurrency", th)[0] == "pass"
