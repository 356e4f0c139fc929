#!/usr/bin/python
"""Ansible module: gather Preflight's node facts (THP, hugepages, NUMA, allocator, tuners, GPUs)."""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.preflight.core.facts import gather

DOCUMENTATION = r"""
---
module: node_facts
short_description: Gather the memory, kernel and GPU facts Preflight tunes and certifies
description:
  - Reads transparent hugepage (THP) settings and the choices this kernel offers, hugepage pools per
    page size and per NUMA node, the C(/proc/meminfo) lines that matter, NUMA nodes with their CPUs and
    memory, the kernel release and command line, the allocator state (C(/etc/ld.so.preload), jemalloc
    and tcmalloc libraries found), the CPU model and flags, and who else tunes these at boot (tuned,
    sysctl.d files, units and tmpfiles that write sysfs, the GRUB command line).
  - Lists every GPU NVML sees (name, PCI bus id, NUMA node and CPU affinity, memory, driver and CUDA
    driver version, PCIe generation and width, persistence mode, ECC errors). Without NVML it returns an
    empty C(gpus) list and says why in C(gpus_reason).
  - Never changes anything. A file that is absent or unreadable gives null values and a reason.
  - Returns the facts under C(ansible_facts.preflight).
version_added: "0.1.0"
author:
  - Preflight
options:
  root:
    description:
      - Directory to read C(/proc), C(/sys) and C(/etc) under. Leave at C(/) on a node; tests point it at
        a recorded tree.
    type: path
    default: /
  gpus:
    description:
      - Query NVML for GPUs. NVML always describes the live node, whatever O(root) is.
    type: bool
    default: true
requirements:
  - python nvidia-ml-py (import pynvml) and the NVIDIA driver, for GPU facts only
notes:
  - The current PCIe link generation drops while a GPU idles; compare C(pcie.gen_max) or measure under load.
  - C(meminfo_kb.HugePages_*) are page counts of the default hugepage size only; C(hugepages.sizes) has
    every pool.
extends_documentation_fragment:
  - action_common_attributes
  - action_common_attributes.facts
attributes:
  check_mode:
    support: full
    details: The module only reads, so check mode returns the same facts.
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Gather Preflight node facts
  node_facts:

- name: Gather facts from a recorded tree without asking NVML
  node_facts:
    root: /srv/recorded/node17
    gpus: false

- name: Show the THP mode and the GPUs found
  ansible.builtin.debug:
    msg: "THP {{ ansible_facts.preflight.thp.enabled }}, {{ ansible_facts.preflight.gpus | length }} GPU(s)"
"""

RETURN = r"""
ansible_facts:
  description: Facts about the node.
  returned: always
  type: dict
  contains:
    preflight:
      description: Preflight's node facts, versioned by C(schema_version).
      returned: always
      type: dict
      contains:
        schema_version:
          description: Version of this structure.
          type: int
          sample: 1
        thp:
          description: >-
            Transparent hugepages. C(supported) is false, with C(reason), when the kernel has no THP. C(enabled),
            C(defrag), C(shmem_enabled) are the selected words and C(*_choices) the words this kernel accepts;
            C(khugepaged_defrag) is 0, 1 or null; C(sizes) has one entry per multi-size THP size (Linux 6.8+)
            with C(enabled) (null for sizes offered to shmem only), C(choices), C(shmem_enabled), C(shmem_choices).
          type: dict
          sample:
            supported: true
            reason: null
            enabled: madvise
            enabled_choices: [always, madvise, never]
            defrag: madvise
            defrag_choices: [always, defer, defer+madvise, madvise, never]
            khugepaged_defrag: 1
            shmem_enabled: never
            hpage_pmd_size_kb: 2048
            sizes: {"2048kB": {size_kb: 2048, enabled: inherit, choices: [always, inherit, madvise, never]}}
        hugepages:
          description: >-
            Hugepage pools: C(default_size_kb), and per size C(total), C(free), C(rsvd), C(surp), C(overcommit)
            pages and C(nodes) (per NUMA node C(total), C(free), C(surp)). C(reason) when hugetlbfs is absent.
          type: dict
          sample:
            default_size_kb: 2048
            sizes: {"2048kB": {size_kb: 2048, total: 0, free: 0, rsvd: 0, surp: 0, overcommit: 0,
                               nodes: {"0": {total: 0, free: 0, surp: 0}}}}
            reason: null
        meminfo_kb:
          description: >-
            Selected /proc/meminfo values (kB; HugePages_* are page counts); null for a line the kernel lacks.
          type: dict
          sample: {MemTotal: 24683656, MemAvailable: 21879180, Hugetlb: 0, Hugepagesize: 2048}
        meminfo_reason:
          description: Why some meminfo values are null, or null.
          type: str
        numa:
          description: NUMA nodes with C(id), C(cpulist), C(cpus), C(mem_total_kb), C(mem_free_kb), C(distances).
          type: dict
          sample: {nodes: [{id: 0, cpulist: "0-1", cpus: [0, 1], mem_total_kb: 9135904, mem_free_kb: 4801716,
                            distances: [10]}], reason: null}
        kernel:
          description: >-
            C(release), C(version), C(cmdline), C(cmdline_params) (the THP and hugepage parameters, last one
            wins, null when absent) and C(cmdline_hugepage_pools) (each hugepages= with the hugepagesz= before it).
          type: dict
        allocator:
          description: >-
            C(ld_so_preload) entries and the C(jemalloc_paths) and C(tcmalloc_paths) found in the library dirs.
          type: dict
          sample:
            ld_so_preload: []
            jemalloc_paths: [/usr/lib/x86_64-linux-gnu/libjemalloc.so.2]
            tcmalloc_paths: []
        cpu:
          description: >-
            C(model), C(count) and C(flags) (pdpe1gb, avx2, avx512f, ... true or false; null without a flags line).
          type: dict
        tuners:
          description: >-
            Who else sets these at boot: C(tuned_active_profile), C(tuned_settings) and C(tuned_files) (includes
            first), C(sysctl_overrides) (sysctl name to the files setting it, in the order they apply) and
            C(sysctl_values) (the value that wins), C(boot_writers) (units, tmpfiles, sysfs.conf, rc.local writing
            THP or hugepage pools), C(bootloader) (grub or null, with C(bootloader_reason)), C(grub_cmdline)
            and C(grub_cmdline_params).
          type: dict
        gpus:
          description: >-
            One entry per GPU: C(index), C(name), C(uuid), C(pci_bus_id) (sysfs form), C(numa_node), C(cpu_affinity)
            (cpulist), C(memory_total_mib), C(memory_used_mib), C(compute_capability), C(driver_version),
            C(cuda_driver_version), C(pcie) (C(gen_current), C(gen_max), C(width_current), C(width_max),
            C(bandwidth_gbs_current), C(bandwidth_gbs_max)), C(persistence_mode), C(ecc) (C(mode),
            C(volatile_uncorrected), C(aggregate_uncorrected), ...), C(remapped_rows), and C(errors) naming each
            field NVML refused on this GPU.
          type: list
          elements: dict
        gpus_reason:
          description: Why C(gpus) is empty (no NVML, no driver), or null.
          type: str
          sample: "NVML not available: NVML Shared Library Not Found"
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "gpus": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    root = module.params["root"]
    if not os.path.isdir(root):
        module.fail_json(msg=f"root {root!r} is not a directory: give the tree to read /proc and /sys under")
    facts = gather(root=root, gpus=module.params["gpus"])
    module.exit_json(changed=False, ansible_facts={"preflight": facts})


if __name__ == "__main__":
    main()
