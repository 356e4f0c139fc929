"""The kernel command line, split and read as the kernel reads it."""

from __future__ import annotations

from .tree import parse_size_kb

# Kernel parameters that decide THP and hugepage pools at boot (dashes and underscores are equal).
CMDLINE_KEYS = (
    "transparent_hugepage",
    "transparent_hugepage_shmem",
    "thp_anon",
    "hugepages",
    "hugepagesz",
    "default_hugepagesz",
    "hugetlb_free_vmemmap",
    "numa_balancing",
)


def split_cmdline(text: str) -> list[str]:
    """Words of a kernel command line as the kernel splits them (double quotes group spaces)."""
    words: list[str] = []
    current: list[str] = []
    quoted = started = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            started = True
            continue
        if ch.isspace() and not quoted:
            if started or current:
                words.append("".join(current))
            current, started = [], False
            continue
        current.append(ch)
    if started or current:
        words.append("".join(current))
    return words


def kernel_params(cmdline: str | None) -> list[tuple[str, str]]:
    """(name, value) for every kernel parameter, in order; what follows '--' belongs to init."""
    params: list[tuple[str, str]] = []
    for word in split_cmdline(cmdline or ""):
        if word == "--":
            break
        name, _, value = word.partition("=")
        params.append((name.replace("-", "_"), value))
    return params


def cmdline_facts(cmdline: str | None) -> tuple[dict[str, str | None], list[dict]]:
    """The memory parameters (last one wins, as in the kernel) and the hugepage pools they ask for."""
    params = kernel_params(cmdline)
    chosen: dict[str, str | None] = {key: None for key in CMDLINE_KEYS}
    pools: list[dict] = []
    size = None
    for name, value in params:
        if name in chosen:
            chosen[name] = value
        if name == "hugepagesz":
            size = value
        elif name == "hugepages":
            # hugepages= before any hugepagesz= sizes the default pool.
            pools.append({"hugepagesz": size, "size_kb": parse_size_kb(size), "hugepages": value})
    return chosen, pools


