#!/usr/bin/python
"""Ansible module: write a node's Preflight metrics where node_exporter's textfile collector reads them."""

from __future__ import annotations

import os
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.preflight.core.files import PROM_FILE, PROM_FILE_MODE, write_atomic

DOCUMENTATION = r"""
---
module: preflight_textfile
short_description: Write a file for node_exporter's textfile collector, atomically, in one step
description:
  - Writes O(content) to O(dir)/O(name) as node_exporter's textfile collector asks, into a temporary file in the
    same directory whose name does not end in C(.prom) (the collector skips it), then renamed over the target.
    The collector never reads half a file.
  - Creates O(dir) when it is missing (mode 0755); an existing directory keeps its owner and mode.
  - Unchanged content and mode change nothing. One call per node, where ansible.builtin.file and
    ansible.builtin.copy make three (the directory, a stat and the copy).
version_added: "0.1.0"
author:
  - Preflight
options:
  dir:
    description: The textfile collector's directory (node_exporter's C(--collector.textfile.directory)).
    type: path
    required: true
  name:
    description: The file's name in O(dir); a plain name ending in C(.prom).
    type: str
    default: preflight.prom
  content:
    description: The file's text (Prometheus text exposition format).
    type: str
    required: true
  mode:
    description: The file's permissions, in octal. node_exporter's own user must be able to read it.
    type: str
    default: "0644"
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Says whether the file would change, and shows the change with C(--diff); writes nothing.
  diff_mode:
    support: full
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Write this node's Preflight metrics where node_exporter reads them
  preflight_textfile:
    dir: /var/lib/prometheus/node-exporter
    content: "{{ preflight_report_result.node_metrics[inventory_hostname] }}"
"""

RETURN = r"""
path:
  description: The file written (or that would be, in check mode).
  returned: always
  type: str
  sample: /var/lib/prometheus/node-exporter/preflight.prom
dir_created:
  description: Whether O(dir) was missing and was made (or would be, in check mode).
  returned: always
  type: bool
"""


def problems(params: dict) -> list[str]:
    """What is wrong with the options, each naming its option and what is allowed."""
    found = []
    name = params["name"]
    if not name.endswith(".prom") or "/" in name or name.startswith("."):
        found.append(f"name: {name!r} is not a plain file name ending in .prom (node_exporter reads only those, "
                     "and skips names starting with '.')")
    try:
        mode = int(params["mode"], 8)
        if not 0 <= mode <= 0o7777:
            raise ValueError
    except ValueError:
        found.append(f"mode: {params['mode']!r} is not an octal file mode such as 0644")
    if os.path.exists(params["dir"]) and not os.path.isdir(params["dir"]):
        found.append(f"dir: {params['dir']} exists and is not a directory")
    return found


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "dir": {"type": "path", "required": True},
            "name": {"type": "str", "default": PROM_FILE},
            "content": {"type": "str", "required": True},
            "mode": {"type": "str", "default": f"{PROM_FILE_MODE:04o}"},
        },
        supports_check_mode=True,
    )
    p = module.params
    found = problems(p)
    if found:
        module.fail_json(msg="preflight_textfile: " + "; ".join(found) + "; nothing was written")
    path = os.path.join(p["dir"], p["name"])
    mode = int(p["mode"], 8)
    data = p["content"].encode("utf-8")
    try:
        with open(path, "rb") as handle:
            before = handle.read()
        before_mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        before, before_mode = None, None
    dir_created = not os.path.isdir(p["dir"])
    changed = before != data or before_mode != mode
    result = {"changed": changed, "path": path, "dir_created": dir_created}
    if module._diff and changed:
        result["diff"] = {"before_header": path, "after_header": path,
                          "before": "" if before is None else before.decode("utf-8", "replace"),
                          "after": p["content"]}
    if changed and not module.check_mode:
        try:
            write_atomic(path, data, mode)
        except OSError as exc:
            module.fail_json(msg=f"preflight_textfile: cannot write {path}: {exc.strerror or exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
