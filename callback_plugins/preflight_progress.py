"""Callback plugin: print each running probe's progress line (library/slm_probe_wait.py) as it comes.

Enabled in ansible.cfg (callbacks_enabled). Each retry of the wait task carries ``preflight_progress``: host,
probe, the probe's current step, elapsed time, the run against the level's budget, and the node log to tail.
"""

from __future__ import annotations

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: preflight_progress
type: notification
short_description: Show each running Preflight probe's progress every poll
description:
  - Prints the C(preflight_progress) line of every retry of C(slm_probe_wait) - host, probe, step, elapsed time,
    the level's budget and the probe's log on the node.
requirements:
  - enabled in ansible.cfg (callbacks_enabled = preflight_progress)
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "preflight_progress"
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_retry(self, result) -> None:
        line = result._result.get("preflight_progress")
        if line:
            self._display.display(f"  progress: {line}", color="cyan")
