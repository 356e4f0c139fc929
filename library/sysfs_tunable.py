#!/usr/bin/python
"""Ansible module: set one kernel tunable file under /sys or /proc/sys, and prove the kernel took it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sysfs_tunable
short_description: Set one kernel tunable file (sysfs or procfs) and read it back
description:
  - Reads the current value of one kernel tunable file such as
    C(/sys/kernel/mm/transparent_hugepage/enabled) or C(/proc/sys/vm/nr_hugepages).
  - Understands the selection format the kernel uses for multiple-choice files, such as
    C(always [madvise] never) where the bracketed word is the current value and the words are the choices,
    and plain values such as C(1) or C(1024).
  - Validates the requested value against the choices the file itself offers, writes it in one
    C(write) call, reads the file back and fails with the reason when the kernel refused the write
    or did not take the value.
  - Nothing is written in check mode; C(changed) and C(diff) still say what would change.
version_added: "0.1.0"
author: Preflight
options:
  path:
    description: Absolute path of the tunable file.
    type: path
    required: true
  value:
    description:
      - The value to set. For a multiple-choice file, one of its words without brackets.
      - Compared with the current value after trimming and collapsing whitespace.
    type: str
    required: true
  choices_from_file:
    description:
      - When the file uses the bracket format, reject a value that is not among its words before
        touching anything.
      - Set to C(false) to skip that check and let the kernel judge the write.
      - Has no effect on plain-value files, which list no choices.
    type: bool
    default: true
  fail_on_mismatch:
    description:
      - Fail when the value read back after writing differs from O(value).
      - Set to C(false) for tunables the kernel may honour in part (for example C(nr_hugepages) when
        memory is short); the result then has RV(taken=false) and the value the kernel kept in RV(after).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - sysfs files cannot be replaced by rename, so the write is a single C(write) of the value and a newline,
    which the kernel applies as one operation.
"""

EXAMPLES = r"""
- name: Ensure THP is enabled only for madvise() regions
  sysfs_tunable:
    path: /sys/kernel/mm/transparent_hugepage/enabled
    value: madvise

- name: Ensure khugepaged may defragment
  sysfs_tunable:
    path: /sys/kernel/mm/transparent_hugepage/khugepaged/defrag
    value: "1"

- name: Reserve 2 MiB pages, accepting a partial allocation and reporting it
  sysfs_tunable:
    path: /proc/sys/vm/nr_hugepages
    value: "512"
    fail_on_mismatch: false
  register: pool
"""

RETURN = r"""
path:
  description: The tunable file.
  returned: always
  type: str
  sample: /sys/kernel/mm/transparent_hugepage/enabled
before:
  description: The value before the module ran (the bracketed word for a multiple-choice file).
  returned: success
  type: str
  sample: always
after:
  description:
    - The value after the module ran, read back from the file.
    - In check mode, the value that would be set.
  returned: success
  type: str
  sample: madvise
choices:
  description: The words a multiple-choice file offers; empty for a plain-value file.
  returned: success
  type: list
  elements: str
  sample: [always, madvise, never]
taken:
  description: Whether the value read back equals the requested value (in check mode, the prediction).
  returned: success
  type: bool
  sample: true
changed:
  description: Whether the file was (or in check mode would be) written.
  returned: always
  type: bool
diff:
  description: Before and after, one line each, headed by the path.
  returned: when diff mode is on
  type: dict
  sample: {before: "always\n", after: "madvise\n", before_header: /sys/kernel/mm/transparent_hugepage/enabled}
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.preflight.core.sysfs import parse_tunable, read_tunable  # noqa: E402, F401

# parse_tunable / read_tunable: the core's (module_utils/preflight/core/sysfs.py), the one tunable parser.


def normalise(value: str) -> str:
    return " ".join(value.split())


def write_tunable(path: str, value: str) -> None:
    """One write() of the value: how the kernel expects a tunable to be set (no temp file, no rename)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, (value + "\n").encode("ascii"))
    finally:
        os.close(fd)


ARGUMENT_SPEC = {
    "path": {"type": "path", "required": True},
    "value": {"type": "str", "required": True},
    "choices_from_file": {"type": "bool", "default": True},
    "fail_on_mismatch": {"type": "bool", "default": True},
}


def run_module() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    path = module.params["path"]
    wanted = normalise(module.params["value"])
    result = {"changed": False, "path": path}

    if not wanted:
        module.fail_json(msg=f"value for {path} is empty: give the word or number to write", **result)
    if not os.path.exists(path):
        module.fail_json(msg=f"{path} does not exist: this kernel does not offer that tunable", **result)
    try:
        before, choices = read_tunable(path)
    except OSError as err:
        module.fail_json(msg=f"cannot read {path}: {err.strerror}", **result)
    result.update(before=before, choices=choices)

    if choices and module.params["choices_from_file"] and wanted not in choices:
        module.fail_json(
            msg=f"'{wanted}' is not a choice of {path}; this kernel offers: {', '.join(choices)}", **result
        )

    changed = before != wanted
    after = wanted if changed else before
    if changed and not module.check_mode:
        try:
            write_tunable(path, wanted)
        except OSError as err:
            module.fail_json(msg=f"the kernel refused '{wanted}' for {path}: {err.strerror}", **result)
        after, _ = read_tunable(path)

    result.update(changed=changed, after=after, taken=after == wanted)
    if module._diff:
        result["diff"] = {"before": before + "\n", "after": after + "\n", "before_header": path, "after_header": path}
    if not result["taken"] and module.params["fail_on_mismatch"]:
        module.fail_json(
            msg=f"the kernel did not take '{wanted}' for {path}: it reads back '{after}' after the write", **result
        )
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
