"""probes.stats on samples whose answers are known by hand."""

from __future__ import annotations

import json
import math
import random

import pytest

from probes import stats


def test_summary_of_one_to_five_matches_hand_computed_figures():
    s = stats.summarize([5, 3, 1, 4, 2], "s")
    assert s["n"] == 5
    assert s["unit"] == "s"
    assert s["median"] == 3
    assert s["p5"] == pytest.approx(1.2)  # rank 0.2 between 1 and 2
    assert s["p95"] == pytest.approx(4.8)
    assert s["mean"] == 3
    assert s["stdev"] == pytest.approx(math.sqrt(2.5))
    assert s["cv"] == pytest.approx(math.sqrt(2.5) / 3)
    assert s["iqr"] == 2  # p75 4 - p25 2
    assert (s["min"], s["max"]) == (1, 5)
    assert s["samples"] == [5, 3, 1, 4, 2]  # raw samples kept in the order measured
    assert s["ci_low"] <= 3 <= s["ci_high"]
    assert 1 <= s["ci_low"] and s["ci_high"] <= 5


def test_spread_warning_only_when_iqr_exceeds_ten_percent_of_median():
    tight = stats.summarize([9.9, 10.0, 10.0, 10.05, 10.1], "s")
    assert tight["iqr"] == pytest.approx(0.05)
    assert tight["spread_warning"] is None
    loose = stats.summarize([8.0, 9.0, 10.0, 11.0, 12.0], "s")  # IQR 2 = 20 % of 10
    assert loose["spread_warning"].startswith("IQR is 20.0 % of the median (over 10 %)")


def test_empty_sample_is_null_not_zero():
    s = stats.summarize([], "GB/s")
    assert s["n"] == 0
    assert s["samples"] == []
    for key in ("median", "p5", "p95", "mean", "stdev", "cv", "iqr", "ci_low", "ci_high", "min", "max"):
        assert s[key] is None, key
    assert s["spread_warning"] == "no samples: nothing was measured"


def test_single_sample_has_no_interval_and_says_so():
    s = stats.summarize([2.5], "s")
    assert s["median"] == 2.5
    assert s["stdev"] is None and s["ci_low"] is None and s["ci_high"] is None
    assert "one sample" in s["spread_warning"]


def test_interval_is_distribution_free_with_its_true_coverage():
    five = stats.summarize([1, 2, 3, 4, 5], "s")
    assert (five["ci_low"], five["ci_high"], five["ci_coverage"]) == (1, 5, 0.9375)
    # n=9: [x(2), x(8)] covers the median with 1 - 2 * 10/512 = 96.1 %; [x(3), x(7)] only 82 %.
    nine = stats.summarize(list(range(1, 10)), "s")
    assert (nine["ci_low"], nine["ci_high"]) == (2, 8)
    assert nine["ci_coverage"] == pytest.approx(1 - 20 / 512)


def test_two_samples_interval_is_their_range():
    # Bootstrap medians of {1, 3} are 1, 2 or 3 with probabilities 1/4, 1/2, 1/4: the 2.5 / 97.5 % points are 1, 3.
    s = stats.summarize([1.0, 3.0], "s")
    assert (s["ci_low"], s["ci_high"]) == (1.0, 3.0)


def test_non_finite_samples_are_refused():
    with pytest.raises(ValueError, match="finite"):
        stats.summarize([1.0, float("nan")], "s")


def test_percentile_rejects_out_of_range_q():
    with pytest.raises(ValueError, match="outside 0..100"):
        stats.percentile([1.0], 101)


def test_bootstrap_is_reproducible_with_a_seed():
    data = [random.Random(1).gauss(10, 1) for _ in range(12)]
    assert stats.summarize(data, "s", seed=7)["ci_low"] == stats.summarize(data, "s", seed=7)["ci_low"]


def test_ci_of_median_covers_the_true_median_at_least_95_percent_of_the_time():
    rng = random.Random(42)
    trials, hits = 200, 0
    for i in range(trials):
        data = [rng.gauss(0.0, 1.0) for _ in range(15)]  # true median 0
        s = stats.summarize(data, "s", n_boot=400, seed=i)
        hits += s["ci_low"] <= 0.0 <= s["ci_high"]
    # Widened to the order-statistic interval [x(4), x(12)], whose exact coverage at n=15 is 96.5 %.
    assert 0.93 <= hits / trials


def test_summary_is_plain_json():
    json.dumps(stats.summarize([1, 2, 3], "s"))


def test_compare_names_the_winner_with_effect_relative_to_the_loser():
    fast = [1.0, 1.01, 0.99, 1.02, 0.98]
    slow = [1.2, 1.21, 1.19, 1.22, 1.18]
    c = stats.compare(fast, slow, name_a="jemalloc", name_b="glibc", unit="s")
    assert c["faster"] == "jemalloc"
    assert c["inside_noise"] is False
    assert c["effect_pct"] == pytest.approx(100 * (1.2 - 1.0) / 1.2)
    lo, hi = c["effect_ci_pct"]
    assert lo <= c["effect_pct"] <= hi
    # n=5: [min, max] is the narrowest distribution-free interval, and it covers the median 93.75 % of the time.
    assert c["verdict"].startswith("jemalloc faster by 16.7 % (93.8 % CI of medians: jemalloc 0.98-1.02 s vs glibc ")
    assert c["verdict"].endswith("n=5/5)")
    # Order of arguments does not change who wins.
    assert stats.compare(slow, fast, name_a="glibc", name_b="jemalloc", unit="s")["faster"] == "jemalloc"


def test_compare_higher_is_better_for_throughput():
    c = stats.compare([100, 101, 99, 100], [120, 121, 119, 120], name_a="glibc", name_b="jemalloc",
                      unit="tokens/s", lower_is_better=False)
    assert c["faster"] == "jemalloc"
    assert c["effect_pct"] == pytest.approx(20.0)


def test_overlapping_intervals_are_inside_noise_and_name_no_winner():
    c = stats.compare([1, 2, 3, 4, 5], [1.5, 2.5, 3.5, 4.5, 5.5], name_a="glibc", name_b="jemalloc", unit="s")
    assert c["faster"] is None
    assert c["inside_noise"] is True
    assert c["better_median"] == "glibc"
    assert c["verdict"].startswith("inside noise: glibc median 3 s vs jemalloc 3.5 s (14.3 % apart)")


def test_too_few_samples_is_inside_noise():
    c = stats.compare([1.0, 1.1, 1.0], [2.0, 2.1, 2.2, 2.3], name_a="a", name_b="b", unit="s")
    assert c["faster"] is None and c["inside_noise"] is True
    assert c["verdict"] == "inside noise: too few samples to compare a and b (n=3/4; at least 4 each are needed)"


def test_compare_rarely_names_a_winner_between_samples_of_one_distribution():
    rng = random.Random(3)
    for n in (4, 5, 8):
        false_winners = sum(
            stats.compare([rng.gauss(1, 0.2) for _ in range(n)], [rng.gauss(1, 0.2) for _ in range(n)],
                          name_a="a", name_b="b", unit="s", n_boot=200, seed=i)["faster"] is not None
            for i in range(300)
        )
        assert false_winners / 300 <= 0.05, (n, false_winners)


def test_equal_medians_are_inside_noise():
    c = stats.compare([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.0, 3.5], name_a="a", name_b="b", unit="s")
    assert c["faster"] is None and c["effect_pct"] is None
    assert c["verdict"].startswith("inside noise: equal medians 2.5 s")


def test_ratio_of_medians_with_interval():
    r = stats.ratio([2.0, 2.0, 2.0, 2.0], [4.0, 4.0, 4.0, 4.0])
    assert r["median_ratio"] == 0.5
    assert (r["ci_low"], r["ci_high"]) == (0.5, 0.5)
    few = stats.ratio([2.0, 3.0], [4.0, 4.0])
    assert few["median_ratio"] == 2.5 / 4 and few["ci_low"] is None
    assert stats.ratio([], [1.0])["median_ratio"] is None


def test_median_interval_of_thousands_of_samples_does_not_overflow():
    # 20 requests x 63 inter-token gaps made the H100 TTFT run crash here once (comb(n, k) / 2**n overflowed).
    samples = [float(i % 97) for i in range(5000)]
    summary = stats.summarize(samples, "ms")
    assert summary["n"] == 5000
    assert summary["ci_low"] <= summary["median"] <= summary["ci_high"]
    assert summary["ci_coverage"] >= 0.95
