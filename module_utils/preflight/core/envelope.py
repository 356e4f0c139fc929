"""What a probe's envelope says about how the probe went, read the same by the probes and by the modules.

A probe's exit status comes from its envelope (probes/result.py); a shared-server run (probe ``suite``) holds
one envelope per member, and each member ran or failed on its own (library/slm_probe.py records them).
"""

from __future__ import annotations


def exit_status(doc: dict) -> int:
    """0 when every measurement was taken, 1 when a measurement failed (errors or a failed verdict)."""
    if doc.get("errors") or any(v.get("status") == "fail" for v in doc.get("verdicts") or []):
        return 1
    return 0


def _why(doc: dict) -> str:
    errors = doc.get("errors") or []
    if errors:
        return "; ".join(str(e) for e in errors)
    failed = [f"{v.get('name')}: {v.get('text')}" for v in doc.get("verdicts") or [] if v.get("status") == "fail"]
    return "failed verdicts: " + "; ".join(failed)


def suite_outcome(suite: dict | None, members: list[str], run: dict) -> dict:
    """A suite envelope -> {members: each member's envelope by name, ran: the members whose measurements were
    all taken, failures: the others as the run record's ``failed`` entries, phases: one per member, as a probe
    run alone has (``probe <name>``, its envelope's duration)}. ``run`` carries what every failed entry
    repeats: task, rc, timed_out, stderr_tail, cmd; a member without an envelope failed with ``run["msg"]``."""
    found = ((suite or {}).get("results") or {}).get("members") or {}
    out: dict = {"members": {}, "ran": [], "failures": [], "phases": []}
    for name in members:
        doc = found.get(name)
        ok = isinstance(doc, dict) and not exit_status(doc)
        if isinstance(doc, dict):
            out["members"][name] = doc
        if ok:
            out["ran"].append(name)
        else:
            why = _why(doc) if isinstance(doc, dict) else \
                f"no result ({run.get('msg') or 'the shared-server run printed none'})"
            out["failures"].append(dict(run, probe=name, msg=f"probe {name}: {why}"))
        duration = doc.get("duration_s") if isinstance(doc, dict) else None
        out["phases"].append({"name": f"probe {name}", "duration_s": round(float(duration or 0.0), 3),
                              "status": "ok" if ok else "failed"})
    return out
