"""Preflight probes: instruments that run on an inference node, standalone (`python -m probes <probe> --json`)
or under Ansible (library/slm_probe.py). Importing the package stays cheap: no torch, no transformers.
"""

PROBES = ("model", "load", "generate", "server", "ttft", "kv", "batching", "ab")
