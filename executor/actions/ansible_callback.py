"""An Ansible callback plugin that tags every remote process a step starts.

This file is not imported by the executor: ``ansible_job`` copies it into the
step's private data dir as ``runbook_tag.py`` and enables it, so it runs
inside ``ansible-playbook``.

Why it exists: when a step is cancelled, ansible-runner kills only the
``ansible-playbook`` process group, and what the play started on the hosts
keeps running (ansible-core's workers call ``os.setsid()``, and with
pipelining the remote module does not even notice its ssh client dying). To
find that work again, every task must carry a mark the host can see. The
play keyword ``environment`` is Ansible's own way to give a task environment
variables, and every process the module starts inherits them; so at the
start of each play this plugin appends ``{RUNBOOK_RUN: <tag>}`` to the
play's ``environment`` (last, so the play's own variables are kept; a task's
own ``environment`` still applies on top). ``remote_reaper`` later finds the
processes whose ``/proc/<pid>/environ`` holds the tag.

The tag comes from ``RUNBOOK_ANSIBLE_TAG`` in the environment of
``ansible-playbook``; without it the plugin does nothing.

Limits, by Ansible's design: ``raw`` tasks get no ``environment``; a
process that clears its environment (``env -i``) loses the tag, although
its process group is still killed when a tagged member is found.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: runbook_tag
type: aggregate
short_description: tag the remote processes of a runbook step
description:
  - Appends RUNBOOK_RUN=<tag> to the environment of every play, so that the
    runbook executor can find and stop what a cancelled step started on its hosts.
  - The tag is read from the RUNBOOK_ANSIBLE_TAG environment variable.
requirements:
  - enabled in callbacks_enabled
"""

TAG_SOURCE = "RUNBOOK_ANSIBLE_TAG"
REMOTE_VARIABLE = "RUNBOOK_RUN"


def _as_list(value: Any) -> list[Any]:
    """A play's ``environment`` as a list: it may be unset, a dict, a template or a list."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict | str):
        return [value]
    return []  # unset (ansible's Sentinel) or None


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "runbook_tag"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_play_start(self, play: Any) -> None:
        tag = os.environ.get(TAG_SOURCE)
        if not tag:
            return
        # The play handed to callbacks is a copy; the blocks loaded from the
        # playbook still point at the original play, and tasks read the
        # environment of the play their block points at. Tag both.
        plays = {id(play): play}
        for block in [*play.pre_tasks, *play.tasks, *play.post_tasks, *play.handlers]:
            owner = getattr(block, "_play", None)
            if owner is not None:
                plays[id(owner)] = owner
        for owner in plays.values():
            current = _as_list(getattr(owner, "_environment", None))
            owner._environment = [*current, {REMOTE_VARIABLE: tag}]
