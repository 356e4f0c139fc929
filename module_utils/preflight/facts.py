"""Node facts: what a GPU inference node's kernel, memory, allocator and GPUs look like right now.

Plain Python (stdlib; pynvml only when present) so it runs on any managed node and can be tested
without Ansible. Every path is read under ``root``: "/" on a live node, a recorded copy of /proc,
/sys and /etc in tests. Nothing here writes anything.

A file that is absent or unreadable gives ``None`` for the values it holds and a ``reason`` that
names the file, never an exception: a node missing a feature is a fact worth reporting.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import re

from .gpus import gpu_facts

SCHEMA_VERSION = 1

THP_DIR = "/sys/kernel/mm/transparent_hugepage"
HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"
NODE_DIR = "/sys/devices/system/node"
CPU_POSSIBLE = "/sys/devices/system/cpu/possible"
NODE_POSSIBLE = "/sys/devices/system/node/possible"
PCI_DEVICES_DIR = "/sys/bus/pci/devices"

# HugePages_* are page counts, not kB; every other key is in kB, as /proc/meminfo prints them.
MEMINFO_KEYS = (
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Cached",
    "AnonHugePages",
    "ShmemHugePages",
    "FileHugePages",
    "Hugetlb",
    "HugePages_Total",
    "HugePages_Free",
    "HugePages_Rsvd",
    "HugePages_Surp",
    "Hugepagesize",
)

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

# The sysctls another tuner could set at boot behind our back.
SYSCTL_KEYS = (
    "vm.nr_hugepages",
    "vm.nr_hugepages_mempolicy",
    "vm.nr_overcommit_hugepages",
    "vm.hugetlb_shm_group",
    "vm.overcommit_memory",
    "vm.swappiness",
    "vm.zone_reclaim_mode",
    "vm.max_map_count",
    "vm.min_free_kbytes",
    "vm.compaction_proactiveness",
    "kernel.numa_balancing",
)

# Highest priority first: a file name in an earlier directory masks the same name in a later one
# (systemd-sysctl(8)); /etc/sysctl.conf is applied last (sysctl --system).
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"

TUNED_ACTIVE_PROFILE = "/etc/tuned/active_profile"
# User profiles first, then the shipped ones (tuned 2.23 moved both under profiles/).
TUNED_PROFILE_DIRS = ("/etc/tuned/profiles", "/etc/tuned", "/usr/lib/tuned/profiles", "/usr/lib/tuned")

# Files that can write sysfs at boot besides sysctl.d; scanned for the knobs below.
BOOT_WRITER_GLOBS = (
    "/etc/rc.local",
    "/etc/sysfs.conf",
    "/etc/sysfs.d/*.conf",
    "/etc/tmpfiles.d/*.conf",
    "/run/tmpfiles.d/*.conf",
    "/usr/lib/tmpfiles.d/*.conf",
    "/etc/systemd/system/*.service",
    "/etc/systemd/system/*.service.d/*.conf",
    "/run/systemd/system/*.service",
    "/etc/cron.d/*",
)
BOOT_WRITER_PATTERNS = {"transparent_hugepage": "transparent_hugepage", "hugepages": "nr_hugepages"}

GRUB_DEFAULT = "/etc/default/grub"
GRUB_DEFAULT_DIR = "/etc/default/grub.d"
GRUB_CMDLINE_VARS = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")

LD_SO_PRELOAD = "/etc/ld.so.preload"
LIB_DIRS = ("/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
ALLOCATOR_GLOBS = {"jemalloc_paths": "libjemalloc.so*", "tcmalloc_paths": "libtcmalloc*.so*"}

CPU_FLAGS = (
    "pse",
    "pdpe1gb",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "bf16",
)


class Tree:
    """A node's file tree under ``root``; every path given to it is the path as seen on the node.

    ``trace`` (used by the fixture recorder) is called as ``trace(kind, path)``: kind "file" for
    every file whose content mattered, "exists" for files only looked for, "dir" for directories listed.
    """

    def __init__(self, root: str = "/", trace=None):
        self.root = root
        self.trace = trace or (lambda kind, path: None)

    def real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def read(self, path: str, problems: list | None = None, record: bool = True) -> str | None:
        """The file's text, or None when it is absent or unreadable (why goes into ``problems``)."""
        try:
            with open(self.real(path), encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except FileNotFoundError:
            if problems is not None:
                problems.append(f"{path}: not found")
            return None
        except OSError as exc:
            if problems is not None:
                problems.append(f"{path}: {exc.strerror or exc}")
            return None
        if record:
            self.trace("file", path)
        return text

    def keep(self, path: str) -> None:
        """Mark a file read with ``record=False`` as one whose content mattered after all."""
        self.trace("file", path)

    def found(self, path: str) -> None:
        """Mark a file whose existence, not content, is the fact."""
        self.trace("exists", path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(self.real(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(self.real(path))

    def listdir(self, path: str) -> list[str] | None:
        try:
            names = sorted(os.listdir(self.real(path)))
        except OSError:
            return None
        self.trace("dir", path)
        return names

    def glob(self, pattern: str) -> list[str]:
        """Node paths matching a shell pattern (wildcards matched one path part at a time), sorted."""
        parts = pattern.strip("/").split("/")
        found = ["/"]
        for part in parts:
            matched = []
            for base in found:
                if not any(ch in part for ch in "*?["):
                    candidate = os.path.join(base, part)
                    if os.path.lexists(self.real(candidate)):
                        matched.append(candidate)
                    continue
                names = self.listdir(base)
                matched.extend(os.path.join(base, name) for name in names or () if fnmatch.fnmatch(name, part))
            found = matched
        return sorted(found)

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self.real(path))
        except OSError:
            return None

    def identity(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.real(path))
        except OSError:
            return None
        return (st.st_dev, st.st_ino)


def _reason(problems: list[str]) -> str | None:
    return "; ".join(problems) if problems else None


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_choices(text: str | None) -> tuple[str | None, list[str]]:
    """'always [madvise] never' -> ('madvise', ['always', 'madvise', 'never'])."""
    if text is None:
        return None, []
    selected = None
    choices = []
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            word = word[1:-1]
            selected = word
        choices.append(word)
    return selected, choices


def parse_cpulist(text: str | None) -> list[int] | None:
    """Kernel cpulist '0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]."""
    if text is None:
        return None
    cpus: list[int] = []
    for chunk in text.strip().split(","):
        if not chunk:
            continue
        if "-" in chunk:
            low, high = chunk.split("-", 1)
            cpus.extend(range(int(low), int(high) + 1))
        else:
            cpus.append(int(chunk))
    return cpus


def parse_size_kb(text: str | None) -> int | None:
    """Kernel memparse: '1G' -> 1048576, '2M' -> 2048, '2048k' -> 2048, bare bytes -> kB."""
    if not text:
        return None
    match = re.fullmatch(r"(\d+)([KkMmGgTt]?)[Bb]?", text.strip())
    if not match:
        return None
    number, suffix = int(match.group(1)), match.group(2).upper()
    factor = {"": 1 / 1024, "K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}[suffix]
    return int(number * factor)


def parse_meminfo(text: str | None) -> dict[str, int]:
    """'/proc/meminfo' or a node's meminfo ('Node 0 MemTotal: ... kB') -> {key: number}."""
    values: dict[str, int] = {}
    for line in (text or "").splitlines():
        match = re.match(r"^(?:Node\s+\d+\s+)?([^:\s]+):\s+(\d+)", line)
        if match:
            values[match.group(1)] = int(match.group(2))
    return values


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


def thp_facts(tree: Tree) -> dict:
    if not tree.isdir(THP_DIR):
        return {
            "supported": False,
            "reason": f"{THP_DIR} is absent: this kernel was built without transparent hugepage support",
            "enabled": None,
            "enabled_choices": [],
            "defrag": None,
            "defrag_choices": [],
            "khugepaged_defrag": None,
            "shmem_enabled": None,
            "shmem_enabled_choices": [],
            "hpage_pmd_size_kb": None,
            "sizes": {},
        }
    problems: list[str] = []
    enabled, enabled_choices = parse_choices(tree.read(f"{THP_DIR}/enabled", problems))
    defrag, defrag_choices = parse_choices(tree.read(f"{THP_DIR}/defrag", problems))
    shmem, shmem_choices = parse_choices(tree.read(f"{THP_DIR}/shmem_enabled", problems))
    pmd_bytes = _int(tree.read(f"{THP_DIR}/hpage_pmd_size", problems))
    khugepaged_defrag = _int(tree.read(f"{THP_DIR}/khugepaged/defrag", problems))
    sizes = {}
    # Multi-size THP (Linux 6.8+): one directory per size; sizes offered to shmem only have no 'enabled'.
    size_dirs = [name for name in tree.listdir(THP_DIR) or () if re.fullmatch(r"hugepages-\d+kB", name)]
    for name in sorted(size_dirs, key=lambda n: int(n[len("hugepages-") : -len("kB")])):
        base = f"{THP_DIR}/{name}"
        size_enabled, size_choices = parse_choices(tree.read(f"{base}/enabled"))
        size_shmem, size_shmem_choices = parse_choices(tree.read(f"{base}/shmem_enabled"))
        sizes[name[len("hugepages-") :]] = {
            "size_kb": int(name[len("hugepages-") : -len("kB")]),
            "enabled": size_enabled,
            "choices": size_choices,
            "shmem_enabled": size_shmem,
            "shmem_choices": size_shmem_choices,
        }
    return {
        "supported": True,
        "reason": _reason(problems),
        "enabled": enabled,
        "enabled_choices": enabled_choices,
        "defrag": defrag,
        "defrag_choices": defrag_choices,
        "khugepaged_defrag": khugepaged_defrag,
        "shmem_enabled": shmem,
        "shmem_enabled_choices": shmem_choices,
        "hpage_pmd_size_kb": pmd_bytes // 1024 if pmd_bytes is not None else None,
        "sizes": sizes,
    }


def _node_ids(tree: Tree) -> list[int]:
    names = tree.listdir(NODE_DIR) or []
    return sorted(int(name[4:]) for name in names if re.fullmatch(r"node\d+", name))


def hugepage_facts(tree: Tree, meminfo: dict[str, int]) -> dict:
    facts: dict = {"default_size_kb": meminfo.get("Hugepagesize"), "sizes": {}, "reason": None}
    names = tree.listdir(HUGEPAGES_DIR)
    if names is None:
        facts["reason"] = f"{HUGEPAGES_DIR} is absent: this kernel has no hugetlbfs support"
        return facts
    problems: list[str] = []
    nodes = _node_ids(tree)
    sized = [name for name in names if re.fullmatch(r"hugepages-\d+kB", name)]
    for name in sorted(sized, key=lambda n: int(n[len("hugepages-") : -len("kB")])):
        base = f"{HUGEPAGES_DIR}/{name}"
        size = {
            "size_kb": int(name[len("hugepages-") : -len("kB")]),
            "total": _int(tree.read(f"{base}/nr_hugepages", problems)),
            "free": _int(tree.read(f"{base}/free_hugepages", problems)),
            "rsvd": _int(tree.read(f"{base}/resv_hugepages", problems)),
            "surp": _int(tree.read(f"{base}/surplus_hugepages", problems)),
            "overcommit": _int(tree.read(f"{base}/nr_overcommit_hugepages", problems)),
            "nodes": {},
        }
        for node in nodes:
            node_base = f"{NODE_DIR}/node{node}/hugepages/{name}"
            if not tree.isdir(node_base):
                continue
            size["nodes"][str(node)] = {
                "total": _int(tree.read(f"{node_base}/nr_hugepages", problems)),
                "free": _int(tree.read(f"{node_base}/free_hugepages", problems)),
                "surp": _int(tree.read(f"{node_base}/surplus_hugepages", problems)),
            }
        facts["sizes"][name[len("hugepages-") :]] = size
    facts["reason"] = _reason(problems)
    return facts


def meminfo_facts(tree: Tree) -> tuple[dict[str, int | None], dict[str, int], str | None]:
    problems: list[str] = []
    parsed = parse_meminfo(tree.read("/proc/meminfo", problems))
    chosen = {key: parsed.get(key) for key in MEMINFO_KEYS}
    if not problems:
        absent = [key for key in MEMINFO_KEYS if key not in parsed]
        if absent:
            problems.append("/proc/meminfo has no line for " + ", ".join(absent))
    return chosen, parsed, _reason(problems)


def numa_facts(tree: Tree) -> dict:
    if not tree.isdir(NODE_DIR):
        return {"nodes": [], "reason": f"{NODE_DIR} is absent: this kernel was built without NUMA support"}
    problems: list[str] = []
    nodes = []
    for node in _node_ids(tree):
        base = f"{NODE_DIR}/node{node}"
        cpulist_text = tree.read(f"{base}/cpulist", problems)
        meminfo = parse_meminfo(tree.read(f"{base}/meminfo", problems))
        distance = tree.read(f"{base}/distance", problems)
        nodes.append(
            {
                "id": node,
                "cpulist": cpulist_text.strip() if cpulist_text is not None else None,
                "cpus": parse_cpulist(cpulist_text),
                "mem_total_kb": meminfo.get("MemTotal"),
                "mem_free_kb": meminfo.get("MemFree"),
                "distances": [int(d) for d in distance.split()] if distance is not None else None,
            }
        )
    return {"nodes": nodes, "reason": _reason(problems)}


def kernel_facts(tree: Tree) -> dict:
    problems: list[str] = []
    release = tree.read("/proc/sys/kernel/osrelease", problems)
    version = tree.read("/proc/sys/kernel/version", problems)
    cmdline = tree.read("/proc/cmdline", problems)
    params, pools = cmdline_facts(cmdline)
    return {
        "release": release.strip() if release is not None else None,
        "version": version.strip() if version is not None else None,
        "cmdline": cmdline.strip() if cmdline is not None else None,
        "cmdline_params": params,
        "cmdline_hugepage_pools": pools,
        "reason": _reason(problems),
    }


def allocator_facts(tree: Tree) -> dict:
    preload = tree.read(LD_SO_PRELOAD)
    lines = []
    for line in (preload or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    facts: dict = {"ld_so_preload": lines}
    lib_dirs = []
    for pattern in LIB_DIRS:
        lib_dirs.extend(d for d in tree.glob(pattern) if tree.isdir(d) and d not in lib_dirs)
    for key, pattern in ALLOCATOR_GLOBS.items():
        paths = []
        for lib_dir in lib_dirs:
            for path in tree.glob(f"{lib_dir}/{pattern}"):
                tree.found(path)
                paths.append(path)
        facts[key] = paths
    return facts


def cpu_facts(tree: Tree) -> dict:
    problems: list[str] = []
    text = tree.read("/proc/cpuinfo", problems)
    model = None
    count = 0
    flags: set[str] | None = None
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and model is None:
            model = value
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    return {
        "model": model,
        "count": count if text is not None else None,
        "flags": {flag: (flag in flags) if flags is not None else None for flag in CPU_FLAGS},
        "reason": _reason(problems),
    }


def _sysctl_files(tree: Tree) -> list[str]:
    """The sysctl files applied at boot, in the order they are applied."""
    chosen: dict[str, str] = {}
    for directory in SYSCTL_DIRS:
        for path in tree.glob(f"{directory}/*.conf"):
            chosen.setdefault(os.path.basename(path), path)
    ordered = []
    seen = set()
    for name in sorted(chosen):
        path = chosen[name]
        identity = tree.identity(path)
        # A name linked to /dev/null masks the shipped file of the same name.
        if identity is None or tree.readlink(path) == "/dev/null":
            continue
        ordered.append(path)
        seen.add(identity)
    conf_identity = tree.identity(SYSCTL_CONF)
    if conf_identity is not None and conf_identity not in seen:
        ordered.append(SYSCTL_CONF)
    return ordered


def sysctl_facts(tree: Tree) -> tuple[dict[str, list[str]], dict[str, str]]:
    overrides: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for path in _sysctl_files(tree):
        text = tree.read(path, record=False)
        hits = False
        for line in (text or "").splitlines():
            line = line.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key = key.strip().lstrip("-").replace("/", ".")
            if key in SYSCTL_KEYS:
                hits = True
                overrides.setdefault(key, []).append(path)
                values[key] = value.strip()
        if hits:
            tree.keep(path)
    return overrides, values


def _tuned_profile_file(tree: Tree, name: str) -> str | None:
    for directory in TUNED_PROFILE_DIRS:
        path = f"{directory}/{name}/tuned.conf"
        if tree.exists(path):
            return path
    return None


def tuned_facts(tree: Tree, problems: list[str]) -> tuple[str | None, dict[str, str], list[str]]:
    """Active tuned profile(s) and what they set that matters to us (includes applied first)."""
    active_text = tree.read(TUNED_ACTIVE_PROFILE)
    active = active_text.strip() if active_text and active_text.strip() else None
    settings: dict[str, str] = {}
    files: list[str] = []

    def apply(name: str, visiting: tuple[str, ...]) -> None:
        if name in visiting:
            problems.append(f"tuned profile {name}: include loop through {' -> '.join(visiting)}")
            return
        path = _tuned_profile_file(tree, name)
        if path is None:
            problems.append(f"tuned profile {name}: no tuned.conf in {', '.join(TUNED_PROFILE_DIRS)}")
            return
        parser = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",))
        parser.optionxform = str
        try:
            parser.read_string(tree.read(path) or "", source=path)
        except configparser.Error as exc:
            problems.append(f"{path}: {exc}")
            return
        if parser.has_option("main", "include"):
            for included in re.split(r"[\s,;]+", parser.get("main", "include").strip()):
                if included:
                    apply(included, visiting + (name,))
        files.append(path)
        for section in parser.sections():
            for key, value in parser.items(section):
                if (
                    section == "vm"
                    or (section == "sysctl" and key in SYSCTL_KEYS)
                    or (section == "bootloader" and key.startswith("cmdline"))
                ):
                    settings[f"{section}.{key}"] = value.strip()

    for name in (active or "").split():
        apply(name, ())
    return active, settings, files


def _expand_shell(value: str, variables: dict[str, str]) -> str:
    """Value of a shell assignment in /etc/default/grub: quotes removed, $VAR expanded."""
    value = value.strip()
    if value.startswith("'") and value.endswith("'") and len(value) >= 2:
        return value[1:-1]
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]

    def expand(match: re.Match) -> str:
        return variables.get(match.group(1) or match.group(2), "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", expand, value)


def grub_facts(tree: Tree) -> tuple[dict[str, str] | None, list[str]]:
    if not tree.exists(GRUB_DEFAULT):
        return None, []
    files = [GRUB_DEFAULT] + tree.glob(f"{GRUB_DEFAULT_DIR}/*.cfg")
    variables: dict[str, str] = {}
    for path in files:
        for line in (tree.read(path) or "").splitlines():
            match = re.match(r"^\s*(?:export\s+)?(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)=(.*)$", line)
            if match:
                variables[match.group(1)] = _expand_shell(match.group(2), variables)
    return {name: variables.get(name) for name in GRUB_CMDLINE_VARS}, files


def boot_writer_facts(tree: Tree) -> dict[str, list[str]]:
    """Files other than sysctl.d that write THP or hugepage pools at boot (units, tmpfiles, sysfs.conf)."""
    writers: dict[str, list[str]] = {key: [] for key in BOOT_WRITER_PATTERNS}
    for pattern in BOOT_WRITER_GLOBS:
        for path in tree.glob(pattern):
            text = tree.read(path, record=False)
            if text is None:
                continue
            for key, needle in BOOT_WRITER_PATTERNS.items():
                if needle in text:
                    tree.keep(path)
                    writers[key].append(path)
    return writers


def tuner_facts(tree: Tree) -> dict:
    problems: list[str] = []
    active, tuned_settings, tuned_files = tuned_facts(tree, problems)
    overrides, values = sysctl_facts(tree)
    grub_cmdline, grub_files = grub_facts(tree)
    grub_params = None
    if grub_cmdline is not None:
        joined = " ".join(v for v in (grub_cmdline[name] for name in GRUB_CMDLINE_VARS) if v)
        grub_params, _ = cmdline_facts(joined)
    return {
        "tuned_active_profile": active,
        "tuned_settings": tuned_settings,
        "tuned_files": tuned_files,
        "sysctl_overrides": overrides,
        "sysctl_values": values,
        "boot_writers": boot_writer_facts(tree),
        "bootloader": "grub" if grub_cmdline is not None else None,
        "bootloader_reason": None
        if grub_cmdline is not None
        else f"no {GRUB_DEFAULT}: no bootloader configuration found that could persist the kernel command line",
        "grub_files": grub_files,
        "grub_cmdline": grub_cmdline,
        "grub_cmdline_params": grub_params,
        "reason": _reason(problems),
    }


def gather(root: str = "/", gpus: bool = True, nvml=None, trace=None) -> dict:
    """All facts about the node under ``root``; ``nvml`` replaces the pynvml module (tests)."""
    tree = Tree(root, trace)
    meminfo, meminfo_all, meminfo_reason = meminfo_facts(tree)
    if gpus:
        cpus = parse_cpulist(tree.read(CPU_POSSIBLE)) or list(range(os.cpu_count() or 1))
        nodes = parse_cpulist(tree.read(NODE_POSSIBLE)) or [0]
        gpu_list, gpus_reason = gpu_facts(
            nvml,
            pci_numa_node=lambda bus_id: _int(tree.read(f"{PCI_DEVICES_DIR}/{bus_id}/numa_node")),
            cpu_words=max(cpus) // 64 + 1,
            node_words=max(nodes) // 64 + 1,
        )
    else:
        gpu_list, gpus_reason = [], "GPU facts not requested (gpus=false)"
    return {
        "schema_version": SCHEMA_VERSION,
        "thp": thp_facts(tree),
        "hugepages": hugepage_facts(tree, meminfo_all),
        "meminfo_kb": meminfo,
        "meminfo_reason": meminfo_reason,
        "numa": numa_facts(tree),
        "kernel": kernel_facts(tree),
        "allocator": allocator_facts(tree),
        "cpu": cpu_facts(tree),
        "tuners": tuner_facts(tree),
        "gpus": gpu_list,
        "gpus_reason": gpus_reason,
    }
