"""How a `ractd` process stops when asked (docs/reliability.md): SIGTERM (a `kill`, a batch
scheduler's stop) is Ctrl-C in every command, and `ractd reproduce` passes a stop on to the commands
it runs, each of which then stops as after a Ctrl-C: a training at a checkpoint, anything else with
nothing half-written, exit code 130.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any, Sequence

CHAIN_CHILD_ENV = "RACTD_RUN_BY_CHAIN"
"""Set in the environment of a command that `ractd reproduce` runs (:func:`start`)."""


def take_stop_signals() -> None:
    """Make SIGTERM raise KeyboardInterrupt, as Ctrl-C does. Called by the `ractd` entry point outside
    torchrun, where SIGTERM is the launcher's way of stopping the other workers.

    A command run by `ractd reproduce` also takes SIGINT, the chain's stop (:func:`stop`), even when
    the shell started the chain with SIGINT ignored (`ractd reproduce ... &` in a script)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if os.environ.get(CHAIN_CHILD_ENV):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def start(command: Sequence[str], env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    """``command`` as a child process in a session of its own: a Ctrl-C at the terminal or a `kill`
    reaches the chain alone, which passes it on once (:func:`stop`)."""
    env = {**(os.environ if env is None else env), CHAIN_CHILD_ENV: "1"}
    return subprocess.Popen(command, start_new_session=True, env=env, **popen)


def stop(children: Sequence[subprocess.Popen]) -> None:
    """The chain was stopped (Ctrl-C or SIGTERM): SIGINT to each running child's process group (the
    child and what it started: torchrun workers, rollout workers), as a Ctrl-C at a terminal would
    send it, then wait for every child. A second Ctrl-C meanwhile is passed on too: a training stops
    at once on its second. (Python's own handling would give a child 0.25 s and then kill it, losing
    the checkpoint it was writing.)"""

    def interrupt() -> None:
        for child in children:
            if child.poll() is None:
                try:
                    os.killpg(child.pid, signal.SIGINT)
                except ProcessLookupError:  # ended meanwhile
                    pass

    interrupt()
    while True:
        try:
            for child in children:
                child.wait()
            return
        except KeyboardInterrupt:
            interrupt()
