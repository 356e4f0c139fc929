"""Preflight reports: the host document, its checks, and every output built from it.

Plain Python (no Ansible import), so each piece is testable on its own; library/preflight_report.py
only marshals arguments into report.pipeline (the host document is assembled in core/document.py). Inside
the package, imports are relative (`from . import metrics`, `from ..core import catalog`), so it imports
without Ansible.
"""
