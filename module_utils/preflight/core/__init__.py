"""Preflight's core: every fact and every decision, in plain Python.

Rules that keep it usable from everywhere (docs/architecture.md):
- stdlib only, and only relative imports inside this package: the same files are imported as
  ``ansible.module_utils.preflight.core`` by the modules (Ansible ships them in each module's payload),
  as ``probes.core`` by the probes on the node (``probes/core`` links here) and by the reports.
- nothing here imports Ansible, the probes or the report code; nothing here writes to the node except
  the functions whose names say so.
"""
