"""What every check is made of, and the small formatting helpers the check modules share."""

from __future__ import annotations

# Persistence states that mean "the setting survives a reboot".
PERSIST_OK = ("installed", "unchanged")


def check(cid, title, category, status, reason, measured=None, expected=None, threshold=None, unit=None) -> dict:
    return {
        "id": cid,
        "title": title,
        "category": category,
        "status": status,
        "measured": measured,
        "expected": expected,
        "threshold": threshold,
        "unit": unit,
        "reason": reason,
    }


def slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in name)


def show(value, unit) -> str:
    if unit in (None, ""):
        return f"{value:.4g}"
    if unit == "x":
        return f"{value:.4g}x"
    if unit == "ratio":
        return f"{100 * value:.3g} %"
    return f"{value:.4g} {unit}"


def text(item) -> str:
    """One conflict or problem record as a phrase."""
    if isinstance(item, dict):
        for key in ("detail", "msg", "message", "source", "path"):
            if item.get(key):
                extra = item.get("path") if key != "path" and item.get("path") else None
                return f"{item[key]} ({extra})" if extra else str(item[key])
        return ", ".join(f"{k}={v}" for k, v in item.items())
    return str(item)


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
