"""core/probe_options.py: each probe's option whitelist and the argument list it becomes, without Ansible.
(tests/integration/test_slm_probe.py checks the flags against each probe's own argparse.)"""

from __future__ import annotations

import pytest

from tests.moduleutils import module_util

options = module_util("preflight.core.probe_options")
catalog = module_util("preflight.core.catalog")


def test_there_is_a_whitelist_for_every_catalog_probe_and_no_other():
    assert tuple(options.PROBE_OPTIONS) == catalog.PROBES


def test_every_option_kind_has_words_for_its_error():
    kinds = {opt.kind for probe in options.PROBE_OPTIONS.values() for opt in probe.values()}
    assert kinds <= set(options._KIND_WORDS)


def test_every_secret_option_is_an_option_of_some_probe():
    assert all(any(name in probe for probe in options.PROBE_OPTIONS.values()) for name in options.SECRET_OPTIONS)


def test_a_probe_not_in_the_catalog_is_refused_with_the_catalog_s_names():
    with pytest.raises(options.ProbeArgumentError) as err:
        options.option_args("server", {})
    assert err.value.errors == ["probe 'server' is not one of load, generate, ttft, kv, batching"]


def test_options_become_flags_in_the_order_given_and_null_keeps_the_default():
    assert options.build_command("/py", "load", {"repeats": "3", "drop_caches": True, "gpus": [0, 1],
                                                 "device": None}) == [
        "/py", "-m", "probes", "load", "--repeats", "3", "--drop-caches", "--gpus", "0,1", "--json"]


@pytest.mark.parametrize(("probe", "name", "value", "kind_words"), [
    ("load", "repeats", True, "an integer of at least 1"),
    ("load", "drop_caches", "yes", "true or false"),
    ("kv", "kv_budget", ["1GiB", False], "a list of fractions above 0 and at most 1, or sizes above 0 such as 1GiB"),
    ("ttft", "server_env", {"A=B": 1}, "a mapping of NAME: value"),
    ("ttft", "server_args", "--dtype=float32", "a list of strings"),
])
def test_a_value_of_the_wrong_kind_is_named_with_the_kind(probe, name, value, kind_words):
    with pytest.raises(options.ProbeArgumentError) as err:
        options.option_args(probe, {name: value})
    assert err.value.errors == [f"options.{name} must be {kind_words}, got {value!r}"]


def test_a_secret_value_is_never_shown():
    with pytest.raises(options.ProbeArgumentError) as err:
        options.option_args("ttft", {"api_key": ["s3cret"]})
    assert err.value.errors == ["options.api_key must be a non-empty string, got (hidden)"]
    cmd = options.build_command("p", "batching", {"api_key": "s3cret"})
    assert options.redact(cmd) == ["p", "-m", "probes", "batching", "--api-key", "********", "--json"]


def test_a_secret_leaves_the_options_for_the_environment_and_never_reaches_the_command_line():
    rest, env = options.secrets_to_env({"endpoint": "http://127.0.0.1:8000", "api_key": "s3cret"})
    assert env == {"VLLM_API_KEY": "s3cret"} and rest == {"endpoint": "http://127.0.0.1:8000"}
    assert "s3cret" not in options.build_command("p", "ttft", rest)
    assert options.secrets_to_env({"api_key": 12345}) == ({}, {"VLLM_API_KEY": "12345"})
    # Not a plain value: it stays, and the option check names it without showing it.
    rest, env = options.secrets_to_env({"api_key": ["s3cret"]})
    assert env == {} and rest == {"api_key": ["s3cret"]}
    with pytest.raises(options.ProbeArgumentError, match=r"options\.api_key must be .*, got \(hidden\)"):
        options.build_command("p", "ttft", rest)
