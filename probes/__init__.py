"""Preflight probes: instruments that run on an inference node, standalone (`python -m probes <probe> --json`)
or under Ansible (library/slm_probe.py). Importing the package stays cheap: no torch, no transformers.
"""

from probes.core.catalog import PROBES as PLANNED

# What `python -m probes <name>` runs: the probes a plan runs (the catalog's) and the tools beside them.
TOOLS = ("model", "server", "ab", "suite")
PROBES = (*PLANNED, *TOOLS)
