"""The same fact written in several places must say the same thing everywhere.

Each role's defaults/main.yml (the project defaults), meta/argument_specs.yml (what ansible-core checks) and
the comments that list allowed values, roles/preflight_defaults/defaults/main.yml (the project-wide defaults),
the example inventory's inventory/group_vars/*.yml, and module_utils/preflight/core/catalog.py where the
catalog owns the fact (THP choices and defaults, levels and budgets, probe names, model shapes).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.moduleutils import module_util

catalog = module_util("preflight.core.catalog")

REPO = Path(__file__).resolve().parents[2]
ROLES = ("thp", "hugepages", "jemalloc", "probe_runtime")
# Project-wide defaults (a role's defaults: the lowest precedence) and the example inventory's group files.
PROJECT_DEFAULTS = REPO / "roles" / "preflight_defaults" / "defaults" / "main.yml"
GROUP_VARS = [PROJECT_DEFAULTS, *sorted((REPO / "inventory" / "group_vars").glob("*.yml"))]
# '# name: a | b | c ...' or '# name: list of a, b ...' / 'any of a, b ...'
COMMENT = re.compile(r"^\s*#\s*(\w+):\s*(.*)$")
WORD = r"[\w.+-]+"
BAR_LIST = re.compile(rf"^({WORD}(?:\s*\|\s*{WORD})+)(?=$|[\s(,;])")
COMMA_LIST = re.compile(rf"^(?:list of|any of)\s+({WORD}(?:,\s*{WORD})*)")
# '{{ probe_model | default('tiny') }}': the value a templated default falls back to.
TEMPLATE_FALLBACK = re.compile(r"""^\{\{.*\|\s*default\(\s*(['"])(.*?)\1\s*\)\s*\}\}$""")


def load(path: Path):
    return yaml.safe_load(path.read_text()) or {}


def role_defaults(role: str) -> dict:
    return load(REPO / "roles" / role / "defaults" / "main.yml")


def role_specs(role: str) -> dict:
    return load(REPO / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]


def role_options(role: str) -> dict:
    return role_specs(role)["main"]["options"]


def words(listing: str) -> list[str]:
    return [word.strip().rstrip(".") for word in re.split(r"[|,]", listing) if word.strip()]


def comment_choices(path: Path) -> dict[str, list[str]]:
    """{variable: the allowed values its comment lists}, for every '# variable: a | b' line of a file."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        match = COMMENT.match(line)
        if not match:
            continue
        listing = COMMA_LIST.match(match[2]) or BAR_LIST.match(match[2])
        if listing:
            found[match[1]] = words(listing[1])
    return found


def effective(value):
    """A default as the role sees it when nothing overrides it (a templated fallback is its literal)."""
    if isinstance(value, str):
        match = TEMPLATE_FALLBACK.match(value.strip())
        if match:
            return match[2]
    return value


def as_words(values) -> list[str]:
    return [str(value).lower() if isinstance(value, bool) else str(value) for value in values]


def spec_option_items():
    for role in ROLES:
        for entry, spec in role_specs(role).items():
            for name, option in (spec.get("options") or {}).items():
                yield pytest.param(role, name, option, id=f"{role}.{entry}.{name}")


@pytest.mark.parametrize(("role", "name", "option"), list(spec_option_items()))
def test_argument_spec_default_equals_the_role_default(role, name, option):
    defaults = role_defaults(role)
    assert name in defaults, f"roles/{role}: {name} is in meta/argument_specs.yml but not in defaults/main.yml"
    assert option.get("default") == effective(defaults[name]), (
        f"roles/{role}: {name} defaults to {defaults[name]!r} in defaults/main.yml but to "
        f"{option.get('default')!r} in meta/argument_specs.yml"
    )


@pytest.mark.parametrize("role", ROLES)
def test_every_role_default_is_in_the_argument_spec(role):
    missing = sorted(set(role_defaults(role)) - set(role_options(role)))
    assert missing == [], f"roles/{role}: defaults/main.yml sets {missing}, meta/argument_specs.yml lacks them"


@pytest.mark.parametrize(("role", "name", "option"), list(spec_option_items()))
def test_the_default_is_one_of_the_choices(role, name, option):
    if "choices" not in option or option.get("default") is None:
        return
    default = option["default"]
    values = default if isinstance(default, list) else [default]
    assert all(value in option["choices"] for value in values), (
        f"roles/{role}: default {default!r} of {name} is not among its choices {option['choices']}"
    )


@pytest.mark.parametrize("role", ROLES)
def test_comments_that_list_allowed_values_equal_the_argument_spec(role):
    options = role_options(role)
    files = [REPO / "roles" / role / "defaults" / "main.yml", *GROUP_VARS]
    for path in files:
        for name, listed in comment_choices(path).items():
            option = options.get(name)
            if option is None:
                continue
            if option.get("type") == "bool":
                where = path.relative_to(REPO)
                assert listed == ["true", "false"], f"{where}: {name} is a bool, its comment lists {listed}"
            elif "choices" in option:
                assert listed == as_words(option["choices"]), (
                    f"{path.relative_to(REPO)}: the comment of {name} lists {listed}, "
                    f"roles/{role}/meta/argument_specs.yml allows {as_words(option['choices'])}"
                )


@pytest.mark.parametrize("role", ROLES)
def test_every_option_with_choices_has_a_comment_listing_them(role):
    listed = comment_choices(REPO / "roles" / role / "defaults" / "main.yml")
    missing = [name for name, option in role_options(role).items() if "choices" in option and name not in listed]
    assert missing == [], f"roles/{role}/defaults/main.yml: no '# name: a | b' comment for {missing}"


def test_thp_choices_are_the_catalog_s():
    options = role_options("thp")
    assert options["thp_enabled"]["choices"] == list(catalog.THP_ENABLED_CHOICES)
    assert options["thp_defrag"]["choices"] == list(catalog.THP_DEFRAG_CHOICES)
    assert options["thp_khugepaged_defrag"]["choices"] == list(catalog.THP_KHUGEPAGED_DEFRAG_CHOICES)
    assert options["thp_persist"]["choices"] == list(catalog.THP_PERSIST_CHOICES)


def test_thp_defaults_are_the_catalog_s():
    defaults = role_defaults("thp")
    assert defaults == catalog.THP_DEFAULTS, (
        f"roles/thp/defaults/main.yml says {defaults}, module_utils/preflight/core/catalog.py THP_DEFAULTS says "
        f"{catalog.THP_DEFAULTS}"
    )


def group_vars_items():
    for path in GROUP_VARS:
        for name, value in load(path).items():
            yield path, name, value


def test_project_defaults_agree_with_every_role_default_they_repeat():
    group = load(PROJECT_DEFAULTS)
    drift = []
    for role in ROLES:
        for name, value in role_defaults(role).items():
            if name in group and group[name] != value:
                drift.append(f"{name}: {PROJECT_DEFAULTS.relative_to(REPO)} {group[name]!r}, "
                             f"roles/{role}/defaults/main.yml {value!r}")
    assert drift == [], f"{PROJECT_DEFAULTS.relative_to(REPO)} differs from the role defaults: " + "; ".join(drift)


def test_group_vars_values_are_among_the_role_choices():
    options = {name: option for role in ROLES for name, option in role_options(role).items()}
    wrong = []
    for path, name, value in group_vars_items():
        option = options.get(name, {})
        if "choices" not in option or isinstance(value, str) and "{{" in value:
            continue
        values = value if isinstance(value, list) else [value]
        if not all(v in option["choices"] for v in values):
            wrong.append(f"{path.name}: {name}={value!r} not among {option['choices']}")
    assert wrong == []


def test_levels_and_budgets_are_the_catalog_s():
    path = PROJECT_DEFAULTS
    group = load(path)
    assert comment_choices(path)["preflight_level"] == list(catalog.LEVELS)
    assert group["preflight_level"] in catalog.LEVELS
    assert group["preflight_level_budget_s"] == catalog.LEVEL_BUDGET_S
    # The comment under preflight_level names each level's budget, in the level order.
    budgets = [int(s) for s in re.findall(r"Budget: (\d+) s per host", path.read_text())]
    assert budgets == [catalog.LEVEL_BUDGET_S[level] for level in catalog.LEVELS]


def plan_comment(field: str) -> list[str]:
    """The values the probe_plan comment of the project defaults lists for one entry field."""
    text = PROJECT_DEFAULTS.read_text()
    where = PROJECT_DEFAULTS.relative_to(REPO)
    match = re.search(rf"^#\s+{field}\s+(.*)$", text, re.M)
    assert match, f"{where}: no '#   {field}  ...' line in the probe_plan comment"
    listing = COMMA_LIST.match(match[1]) or BAR_LIST.match(match[1])
    assert listing, f"{where}: the probe_plan comment of {field} lists no values: {match[1]!r}"
    return words(listing[1])


def test_probe_plan_comment_and_entries_use_the_catalog_s_names():
    assert plan_comment("probe") == list(catalog.PROBES)
    assert plan_comment("levels") == list(catalog.PROBE_LEVELS)
    assert plan_comment("thp_modes") == list(catalog.THP_ENABLED_CHOICES)
    for path in GROUP_VARS:
        for key, entry in (load(path).get("probe_plan") or {}).items():
            assert entry.get("probe", key) in catalog.PROBES, f"{path.name}: probe_plan.{key}"
            assert set(entry.get("levels", [])) <= set(catalog.PROBE_LEVELS), f"{path.name}: probe_plan.{key}"
            assert set(entry.get("thp_modes", [])) <= set(catalog.THP_ENABLED_CHOICES), f"{path.name}: {key}"


def test_model_shapes_listed_anywhere_are_the_catalog_s():
    files = [PROJECT_DEFAULTS, REPO / "roles" / "probe_runtime" / "defaults" / "main.yml"]
    lists = []
    for path in files:
        for match in re.finditer(rf"probes\.model\W+({WORD}(?:\s*\|\s*{WORD})+)", path.read_text()):
            lists.append((path.name, words(match[1])))
    spec = role_options("probe_runtime")["probe_runtime_model"]["description"]
    described = re.search(r"shape of C\(probes\.model\)(.*?) built", " ".join(spec))
    assert described, "roles/probe_runtime/meta/argument_specs.yml: probe_runtime_model names no shapes"
    lists.append(("argument_specs.yml", re.findall(r"C\(([^)]+)\)", described[1])))
    assert len(lists) == 3
    for where, shapes in lists:
        assert shapes == list(catalog.MODEL_SHAPES), f"{where} lists model shapes {shapes}"


def test_the_example_group_files_are_the_example_inventory_s_and_the_project_has_no_group_vars():
    """Playbook group_vars outrank the inventory's: Preflight must have none (an operator's variables win)."""
    assert not (REPO / "playbooks" / "group_vars").exists() and not (REPO / "group_vars").exists()
    groups = yaml.safe_load((REPO / "inventory" / "example-fleet.yml").read_text())["all"]["children"]
    files = {path.stem for path in GROUP_VARS[1:]}
    assert files and files <= set(groups), f"inventory/group_vars/ has {files}, the example inventory {set(groups)}"


def test_thp_sizes_default_type_and_listed_settings_are_the_catalog_s():
    option = role_options("thp")[catalog.THP_SIZES_VARIABLE]
    assert (option["type"], option["default"]) == ("dict", catalog.THP_DEFAULTS["thp_sizes"])
    described = " ".join(option["description"])
    assert all(f"C({choice})" in described for choice in catalog.THP_SIZE_CHOICES), described
    text = (REPO / "roles" / "thp" / "defaults" / "main.yml").read_text()
    listed = re.search(r"^#\s+(\w+(?:\s*\|\s*\w+)+) \(inherit: follow thp_enabled\)$", text, re.M)
    assert listed and words(listed[1]) == list(catalog.THP_SIZE_CHOICES), "roles/thp/defaults/main.yml thp_sizes"
