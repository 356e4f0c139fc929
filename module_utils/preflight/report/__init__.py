"""Preflight reports: the host document, its checks, and every output built from it.

Plain Python (no Ansible import), so each piece is testable on its own; library/preflight_report.py
only marshals arguments into ansible.module_utils.preflight.report.pipeline.
"""
