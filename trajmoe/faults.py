"""Crash points for kill -9 tests: `TRAJMOE_CRASH_AT=<point>:<key>` makes this process SIGKILL itself there.

A real SIGKILL (no `finally`, no atexit, open files left as they are), only at a chosen moment so a
test can stop a run exactly where it wants: after an optimizer step, half-way through a checkpoint,
between its rename and its commit marker, inside an atomic file write. Points:

    step:<N>            after optimizer step N, before it is logged or checkpointed
    ckpt_written:<N>    checkpoint N written to its temporary directory, not yet renamed
    ckpt_renamed:<N>    checkpoint N renamed into place, marker not yet updated
    ckpt_committed:<N>  marker points at checkpoint N, top-level weights not yet exported
    write:<file name>   inside the first atomic write of a file of that name (its temp file exists)

Unset (the normal case) costs one environment lookup per call.
"""

from __future__ import annotations

import os
import signal

ENV = "TRAJMOE_CRASH_AT"


def crash_point(point: str, key: object) -> None:
    """SIGKILL this process if `TRAJMOE_CRASH_AT` equals f"{point}:{key}"."""
    spec = os.environ.get(ENV)
    if spec and spec == f"{point}:{key}":
        os.kill(os.getpid(), signal.SIGKILL)
