"""Rolling runs: whether the next batch of hosts may start, from how the hosts of earlier batches ended.

Preflight decides this itself instead of Ansible's ``max_fail_percentage`` keyword: when that keyword stops a
rollout, ansible-core ends the whole playbook, the report play included, so the hosts already changed and the
host that stopped the rollout would have no report. Here the hosts of a stopped batch end with a recorded
reason (a failed row in the report), and the reports are written as always.

Each host of a rolling play carries a state (``ROLLOUT_STATES``): ``started`` when its batch begins, ``done`` when
it reaches the end of the play, ``stopped`` when this gate kept it from starting. A host of an earlier batch still
``started`` did not finish: it could not start (no root, a rejected plan, another run's lock) or stopped answering.
A node failure Preflight records and goes on from (a setting the kernel refused, a failed probe) ends ``done``: it
is a row in the report and does not stop the rollout.
"""

from __future__ import annotations

MAX_FAIL_VARIABLE = "preflight_max_fail_percentage"
DEFAULT_MAX_FAIL_PERCENTAGE = 0.0
ROLLOUT_STATES = ("started", "done", "stopped")


def max_fail_percentage(value) -> float:
    """The operator's value as a percentage in [0, 100]; None is the default. ValueError names the variable."""
    if value is None or value == "":
        return DEFAULT_MAX_FAIL_PERCENTAGE
    try:
        number = float(str(value).strip().rstrip("%"))
    except ValueError:
        number = None
    if isinstance(value, bool) or number is None or not 0 <= number <= 100:
        raise ValueError(
            f"{MAX_FAIL_VARIABLE}={value!r}: give a number from 0 to 100 (the share of the hosts of earlier "
            "batches, in percent, that may fail to finish before later batches are stopped; 0 stops at the first)"
        )
    return number


def gate(earlier: list[dict], limit) -> dict:
    """Whether the next batch starts. ``earlier``: the rollout state of each host of earlier batches,
    ``{"host": name, "state": one of ROLLOUT_STATES}``; hosts this gate stopped do not count."""
    percent = max_fail_percentage(limit)
    ran = [h for h in earlier if h.get("state") != "stopped"]
    unknown = sorted({str(h.get("state")) for h in ran} - set(ROLLOUT_STATES))
    if unknown:
        raise ValueError(f"rollout states {unknown}: expected one of {list(ROLLOUT_STATES)}")
    failed = sorted(str(h["host"]) for h in ran if h["state"] == "started")
    share = 100.0 * len(failed) / len(ran) if ran else 0.0
    stop = share > percent
    msg = None
    if stop:
        named = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
        msg = (
            f"not run: the rollout stopped before this host's batch, because {len(failed)} of {len(ran)} host(s) "
            f"of earlier batches did not finish ({named}): {share:.0f} %, more than {MAX_FAIL_VARIABLE}="
            f"{percent:g}. Nothing was changed on this host. Their rows in this report say why; fix that and run "
            "again (--limit to the hosts not yet done)."
        )
    # "unfinished", not "failed": a module result with a true "failed" key fails its task.
    return {"stop": stop, "msg": msg, "unfinished": failed, "ran": len(ran), "max_fail_percentage": percent}
