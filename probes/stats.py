"""Statistics for probe samples: summaries with spread and a bootstrap CI of the median, and comparisons
that name a winner only when the confidence intervals of the two medians do not overlap.

Standard library only: the probe parent processes import this without torch.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

SPREAD_WARNING_IQR_FRACTION = 0.10  # torch.utils.benchmark's threshold for "significant environmental influence"
# compare() names a winner only with this many samples on each side: two [min, max] intervals of 4 samples
# drawn from one distribution fail to overlap with probability 2/70 = 2.9 %; with 2 samples it is 1/3.
MIN_COMPARE_N = 4


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, Hyndman-Fan type 7); q in [0, 100]."""
    if not sorted_samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    pos = (len(sorted_samples) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    frac = pos - lo
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * frac


def _median_of(values: list[float]) -> float:
    values.sort()
    return percentile(values, 50)


def bootstrap_median_ci(
    samples: Sequence[float], *, ci_level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of the median; None below 2 samples (one value says nothing about spread)."""
    data = [float(x) for x in samples]
    if len(data) < 2:
        return None
    rng = random.Random(seed)
    n = len(data)
    medians = sorted(_median_of([data[rng.randrange(n)] for _ in range(n)]) for _ in range(n_boot))
    tail = (1.0 - ci_level) / 2.0 * 100.0
    return percentile(medians, tail), percentile(medians, 100.0 - tail)


def order_statistic_ci(sorted_samples: Sequence[float], ci_level: float) -> tuple[float, float, float]:
    """Distribution-free interval of the median [x(k), x(n-k+1)] with the narrowest k whose coverage reaches
    ci_level; (low, high, exact coverage). Below 6 samples no such interval reaches 95 %: [min, max] is given
    with its true, lower coverage (93.75 % at n=5, 50 % at n=2).
    """
    s = sorted_samples
    n = len(s)
    best = (s[0], s[-1], 1.0 - 2.0 * 0.5**n)
    cdf = 0.0  # P(Binomial(n, 1/2) <= k-1)
    for k in range(1, n // 2 + 1):
        j = k - 1  # binomial term in log space: comb(n, j) / 2**n overflows a float from n of about 1030
        cdf += math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) - n * math.log(2.0))
        coverage = 1.0 - 2.0 * cdf
        if coverage < ci_level:
            break
        best = (s[k - 1], s[n - k], coverage)
    return best


def summarize(
    samples: Sequence[float], unit: str, *, ci_level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Median, percentiles, spread and a bootstrap CI of the median; the raw samples are kept.

    An empty sample gives n=0 and null figures, never zeros: a missing measurement is not a fast one.
    """
    data = [float(x) for x in samples]
    if any(math.isnan(x) or math.isinf(x) for x in data):
        raise ValueError(f"samples must be finite numbers, got {data}")
    out: dict = {
        "n": len(data),
        "unit": unit,
        "median": None,
        "p5": None,
        "p95": None,
        "mean": None,
        "stdev": None,
        "cv": None,
        "iqr": None,
        "ci_low": None,
        "ci_high": None,
        "ci_level": ci_level,
        "ci_coverage": None,
        "min": None,
        "max": None,
        "samples": data,
        "spread_warning": None,
    }
    if not data:
        out["spread_warning"] = "no samples: nothing was measured"
        return out
    s = sorted(data)
    median = percentile(s, 50)
    mean = statistics.fmean(s)
    stdev = statistics.stdev(s) if len(s) > 1 else None
    iqr = percentile(s, 75) - percentile(s, 25)
    # The bootstrap interval alone is far too narrow at the sample sizes probes afford (at n=2 it covers the
    # median half the time); it is widened to the distribution-free order-statistic interval.
    boot = bootstrap_median_ci(s, ci_level=ci_level, n_boot=n_boot, seed=seed)
    ci = coverage = None
    if boot is not None:
        os_low, os_high, coverage = order_statistic_ci(s, ci_level)
        ci = (min(boot[0], os_low), max(boot[1], os_high))
    out.update(
        median=median,
        p5=percentile(s, 5),
        p95=percentile(s, 95),
        mean=mean,
        stdev=stdev,
        cv=(stdev / mean) if stdev is not None and mean != 0 else None,
        iqr=iqr,
        ci_low=ci[0] if ci else None,
        ci_high=ci[1] if ci else None,
        ci_coverage=coverage,
        min=s[0],
        max=s[-1],
    )
    if len(s) == 1:
        out["spread_warning"] = "one sample: no spread or confidence interval can be given"
    elif median != 0 and iqr / abs(median) > SPREAD_WARNING_IQR_FRACTION:
        out["spread_warning"] = (
            f"IQR is {100 * iqr / abs(median):.1f} % of the median (over "
            f"{100 * SPREAD_WARNING_IQR_FRACTION:.0f} %): the runs were disturbed or the quantity varies; "
            "differences smaller than that are noise"
        )
    return out


def ci_half_width_pct(summary: dict) -> float | None:
    """The wider side of a summary's confidence interval of the median, in percent of the median."""
    median, low, high = summary.get("median"), summary.get("ci_low"), summary.get("ci_high")
    if median in (None, 0) or low is None or high is None:
        return None
    return 100.0 * max(median - low, high - median) / abs(median)


def _advantage_pct(winner_value: float, loser_value: float, lower_is_better: bool) -> float | None:
    """How much better the winner is, in % of the loser's value (time saved, or throughput gained)."""
    if loser_value == 0:
        return None
    if lower_is_better:
        return 100.0 * (loser_value - winner_value) / loser_value
    return 100.0 * (winner_value - loser_value) / loser_value


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4g}"


def _effect_ci(data_better: list[float], data_worse: list[float], lower_is_better: bool, ci_level: float,
               n_boot: int, seed: int) -> list[float] | None:
    """Bootstrap interval of the better one's advantage (_advantage_pct of the two medians); None when no
    resample gave one."""
    rng = random.Random(seed)
    effects = []
    for _ in range(n_boot):
        mb_ = _median_of([data_better[rng.randrange(len(data_better))] for _ in data_better])
        mw_ = _median_of([data_worse[rng.randrange(len(data_worse))] for _ in data_worse])
        e = _advantage_pct(mb_, mw_, lower_is_better)
        if e is not None:
            effects.append(e)
    if not effects:
        return None
    effects.sort()
    tail = (1.0 - ci_level) / 2.0 * 100.0
    return [percentile(effects, tail), percentile(effects, 100.0 - tail)]


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    name_a: str,
    name_b: str,
    unit: str,
    lower_is_better: bool = True,
    ci_level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Compare two samples. A winner is named only when the CIs of the two medians do not overlap.

    effect_pct is the advantage of the one with the better median, in % of the other's median (positive when
    it is better); effect_ci_pct is its bootstrap interval. Both are given even inside noise, where `faster`
    stays None: they show how large a difference the data could still hide.
    """
    sa = summarize(a, unit, ci_level=ci_level, n_boot=n_boot, seed=seed)
    sb = summarize(b, unit, ci_level=ci_level, n_boot=n_boot, seed=seed + 1)
    out: dict = {
        "a": sa,
        "b": sb,
        "name_a": name_a,
        "name_b": name_b,
        "unit": unit,
        "lower_is_better": lower_is_better,
        "ci_level": ci_level,
        "better_median": None,
        "faster": None,
        "effect_pct": None,
        "effect_ci_pct": None,
        "inside_noise": True,
        "verdict": "",
    }
    counts = f"n={sa['n']}/{sb['n']}"
    if sa["n"] < MIN_COMPARE_N or sb["n"] < MIN_COMPARE_N:
        out["verdict"] = (
            f"inside noise: too few samples to compare {name_a} and {name_b} ({counts}; at least "
            f"{MIN_COMPARE_N} each are needed)"
        )
        return out
    coverage = min(ci_level, sa["ci_coverage"], sb["ci_coverage"])
    level = f"{100 * coverage:.3g} %"

    ma, mb = sa["median"], sb["median"]
    if ma == mb:
        better, worse, m_better, m_worse = None, None, ma, mb
    elif (ma < mb) == lower_is_better:
        better, worse, m_better, m_worse = name_a, name_b, ma, mb
    else:
        better, worse, m_better, m_worse = name_b, name_a, mb, ma
    out["better_median"] = better

    if better is not None:
        out["effect_pct"] = _advantage_pct(m_better, m_worse, lower_is_better)
        data_better, data_worse = (list(a), list(b)) if better == name_a else (list(b), list(a))
        out["effect_ci_pct"] = _effect_ci(data_better, data_worse, lower_is_better, ci_level, n_boot, seed + 2)

    overlap = sa["ci_low"] <= sb["ci_high"] and sb["ci_low"] <= sa["ci_high"]
    ci_text = (
        f"{level} CI of medians: {name_a} {_fmt(sa['ci_low'])}-{_fmt(sa['ci_high'])} {unit} vs "
        f"{name_b} {_fmt(sb['ci_low'])}-{_fmt(sb['ci_high'])} {unit}, {counts}"
    )
    if overlap or better is None:
        out["inside_noise"] = True
        if better is None:
            out["verdict"] = f"inside noise: equal medians {_fmt(ma)} {unit} ({ci_text})"
        else:
            out["verdict"] = (
                f"inside noise: {better} median {_fmt(m_better)} {unit} vs {worse} {_fmt(m_worse)} {unit} "
                f"({out['effect_pct']:.1f} % apart), but the intervals overlap ({ci_text})"
            )
        return out

    out["inside_noise"] = False
    out["faster"] = better
    out["verdict"] = f"{better} faster by {out['effect_pct']:.1f} % ({ci_text})"
    return out


def ratio(
    numerator: Sequence[float],
    denominator: Sequence[float],
    *,
    ci_level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """Ratio of medians (e.g. achieved GB/s / limit GB/s) with a bootstrap interval when both sides have at least
    MIN_COMPARE_N samples; nulls when either is empty."""
    num = [float(x) for x in numerator]
    den = [float(x) for x in denominator]
    out = {"median_ratio": None, "ci_low": None, "ci_high": None, "ci_level": ci_level, "n": [len(num), len(den)]}
    if not num or not den:
        return out
    m_den = _median_of(list(den))
    if m_den == 0:
        return out
    out["median_ratio"] = _median_of(list(num)) / m_den
    if len(num) < MIN_COMPARE_N or len(den) < MIN_COMPARE_N:  # a bootstrap of 2 or 3 samples is no interval
        return out
    rng = random.Random(seed)
    ratios = []
    for _ in range(n_boot):
        d = _median_of([den[rng.randrange(len(den))] for _ in den])
        if d != 0:
            ratios.append(_median_of([num[rng.randrange(len(num))] for _ in num]) / d)
    ratios.sort()
    tail = (1.0 - ci_level) / 2.0 * 100.0
    out["ci_low"] = percentile(ratios, tail)
    out["ci_high"] = percentile(ratios, 100.0 - tail)
    return out
