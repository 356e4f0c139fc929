"""jemalloc wiring for roles/jemalloc: plain Python, testable without Ansible (see also jemalloc_plan.py,
what the role changes on a host, and jemalloc_verify.py, what its read-back proves).

MALLOC_CONF validation against jemalloc's own option names (5.3: src/jemalloc.c, malloc_conf_init_helper),
the systemd drop-in that preloads the library into one service, /etc/ld.so.preload editing, and the
library path picked from the package's file list.
"""

from __future__ import annotations

import difflib
import re
import shlex

MANAGED_BY = "# Managed by Preflight (roles/jemalloc). Undo with: ansible-playbook playbooks/rollback.yml"
DROPIN_NAME = "60-preflight-jemalloc.conf"

_BOOL = ("true", "false")
# Option name -> allowed values: a tuple of words, "int" (may be negative), "uint", or "text" (free form).
OPTIONS: dict[str, tuple[str, ...] | str] = {
    "abort": _BOOL,
    "abort_conf": _BOOL,
    "background_thread": _BOOL,
    "bin_shards": "text",
    "confirm_conf": _BOOL,
    "dirty_decay_ms": "int",
    "dss": ("disabled", "primary", "secondary"),
    "experimental_infallible_new": _BOOL,
    "hpa": _BOOL,
    "hpa_dirty_mult": "text",
    "hpa_hugification_threshold": "uint",
    "hpa_hugification_threshold_ratio": "text",
    "hpa_hugify_delay_ms": "uint",
    "hpa_min_purge_interval_ms": "uint",
    "hpa_sec_batch_fill_extra": "uint",
    "hpa_sec_bytes_after_flush": "uint",
    "hpa_sec_max_alloc": "uint",
    "hpa_sec_max_bytes": "uint",
    "hpa_sec_nshards": "uint",
    "hpa_slab_max_alloc": "uint",
    "junk": ("true", "false", "alloc", "free"),
    "lg_extent_max_active_fit": "uint",
    "lg_prof_interval": "int",
    "lg_prof_sample": "uint",
    "lg_san_uaf_align": "int",
    "lg_tcache_flush_large_div": "uint",
    "lg_tcache_flush_small_div": "uint",
    "lg_tcache_max": "uint",
    "lg_tcache_nslots_mul": "int",
    "log": "text",
    "max_background_threads": "uint",
    "metadata_thp": ("disabled", "auto", "always"),
    "mutex_max_spin": "int",
    "muzzy_decay_ms": "int",
    "narenas": "uint",
    "narenas_ratio": "text",
    "oversize_threshold": "uint",
    "percpu_arena": ("disabled", "percpu", "phycpu"),
    "prof": _BOOL,
    "prof_accum": _BOOL,
    "prof_active": _BOOL,
    "prof_final": _BOOL,
    "prof_gdump": _BOOL,
    "prof_leak": _BOOL,
    "prof_leak_error": _BOOL,
    "prof_log": _BOOL,
    "prof_prefix": "text",
    "prof_recent_alloc_max": "int",
    "prof_stats": _BOOL,
    "prof_sys_thread_name": _BOOL,
    "prof_thread_active_init": _BOOL,
    "prof_time_resolution": ("default", "high"),
    "prof_unbias": _BOOL,
    "retain": _BOOL,
    "san_guard_large": "uint",
    "san_guard_small": "uint",
    "slab_sizes": "text",
    "stats_interval": "int",
    "stats_interval_opts": "text",
    "stats_print": _BOOL,
    "stats_print_opts": "text",
    "tcache": _BOOL,
    "tcache_gc_delay_bytes": "uint",
    "tcache_gc_incr_bytes": "uint",
    "tcache_max": "uint",
    "tcache_nslots_large": "uint",
    "tcache_nslots_small_max": "uint",
    "tcache_nslots_small_min": "uint",
    "thp": ("default", "always", "never"),
    "trust_madvise": _BOOL,
    "utrace": _BOOL,
    "xmalloc": _BOOL,
    "zero": _BOOL,
    "zero_realloc": ("alloc", "free", "abort"),
}
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]+$")
LIBRARY_RE = re.compile(r"/libjemalloc\.so\.(\d+)$")


def parse_malloc_conf(conf: str) -> list[tuple[str, str]]:
    """'a:1,b:2' -> [('a', '1'), ('b', '2')]; a pair without ':' has value ''."""
    pairs = []
    for item in conf.split(","):
        key, _, value = item.partition(":")
        pairs.append((key.strip(), value.strip()))
    return pairs


def validate_malloc_conf(conf) -> list[str]:
    """Every problem of a MALLOC_CONF string, each naming the option, its value and what is allowed."""
    var = "jemalloc_malloc_conf"
    if conf is None or conf == "":
        return []
    if not isinstance(conf, str):
        return [
            f"{var}={conf!r} must be a string of option:value pairs separated by commas, e.g. 'background_thread:true'"
        ]
    if re.search(r"[\s\"'\\]", conf):
        return [f"{var}={conf!r} must not contain spaces, quotes or backslashes (jemalloc options never do)"]
    errors, seen = [], set()
    known = ", ".join(sorted(OPTIONS))
    for key, value in parse_malloc_conf(conf):
        if not key:
            errors.append(f"{var}={conf!r} has an empty option (a stray comma?)")
            continue
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            errors.append(f"{var}: unknown jemalloc option '{key}'{hint}; known options: {known}")
            continue
        if key in seen:
            errors.append(f"{var}: option '{key}' is given twice")
        seen.add(key)
        allowed = OPTIONS[key]
        if isinstance(allowed, tuple):
            if value not in allowed:
                errors.append(f"{var}: {key}:{value} is not allowed; {key} takes one of: {', '.join(allowed)}")
        elif allowed == "int" and not re.fullmatch(r"-?\d+", value):
            errors.append(f"{var}: {key}:{value} is not allowed; {key} takes a whole number (-1 allowed)")
        elif allowed == "uint" and not (re.fullmatch(r"\d+", value) or (key == "narenas" and value == "default")):
            errors.append(f"{var}: {key}:{value} is not allowed; {key} takes a whole number >= 0")
        elif allowed == "text" and not value:
            errors.append(f"{var}: {key} has no value; write it as {key}:<value>")
    return errors


def unit_name(service: str) -> str:
    """'preflight-vllm' -> 'preflight-vllm.service'; a name with a unit suffix stays as it is."""
    return (
        service if re.search(r"\.(service|socket|target|timer|mount|scope|slice)$", service) else f"{service}.service"
    )


def validate_services(services) -> list[str]:
    if not isinstance(services, list):
        return [f"jemalloc_services={services!r} must be a list of systemd service names"]
    errors = []
    for index, service in enumerate(services):
        if not isinstance(service, str) or not UNIT_RE.match(service) or service.startswith("-"):
            errors.append(
                f"jemalloc_services[{index}]={service!r} is not a systemd unit name "
                "(letters, digits and : _ . @ - only, e.g. preflight-vllm or vllm@0.service)"
            )
        elif not unit_name(service).endswith(".service"):
            errors.append(f"jemalloc_services[{index}]={service!r}: only .service units run a process to preload")
    if len({unit_name(s) for s in services if isinstance(s, str)}) != len(services):
        errors.append(f"jemalloc_services={services!r} names a service twice")
    return errors


def pick_library(files: list[str]) -> str | None:
    """The runtime library from a package's file list: libjemalloc.so.N (highest N), never the dev symlink."""
    found = [(int(m.group(1)), path) for path in files if (m := LIBRARY_RE.search(path.strip()))]
    return max(found)[1] if found else None


def dropin_content(library: str, conf: str) -> str:
    lines = [
        MANAGED_BY,
        "# jemalloc for this service only: LD_PRELOAD loads it before the C library's malloc.",
        "[Service]",
        f'Environment="LD_PRELOAD={library}"',
    ]
    if conf:
        lines.append(f'Environment="MALLOC_CONF={conf}"')
    return "\n".join(lines) + "\n"


def parse_environment(text: str) -> dict[str, str]:
    """Environment= assignments of a unit or drop-in, as systemd reads them (quotes, several per line)."""
    env: dict[str, str] = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line.startswith("Environment="):
            continue
        try:
            words = shlex.split(line[len("Environment=") :])
        except ValueError:
            continue
        for word in words:
            key, sep, value = word.partition("=")
            if sep:
                env[key] = value
    return env


def preload_content(text: str | None, library: str, present: bool) -> str:
    """/etc/ld.so.preload with the library line added (present) or removed, every other byte kept."""
    text = text or ""
    lines = text.splitlines(keepends=True)
    has = any(line.strip() == library for line in lines)
    if present:
        if has:
            return text
        if text and not text.endswith("\n"):
            text += "\n"
        return text + library + "\n"
    return "".join(line for line in lines if line.strip() != library)


def maps_has_library(maps: str, paths: list[str]) -> bool:
    """Whether /proc/PID/maps text maps one of the library paths (the file itself or its real path)."""
    mapped = {line.split(None, 5)[5].strip() for line in maps.splitlines() if len(line.split(None, 5)) == 6}
    return any(path in mapped for path in paths if path)
