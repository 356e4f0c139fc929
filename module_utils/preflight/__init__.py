"""Preflight's shared logic for its Ansible modules: plain Python, importable without Ansible."""
