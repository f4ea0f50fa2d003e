"""One way to run independent jobs on worker processes (data generation, scene sets, vocabulary
scores, policy rollouts).

Workers are started with "spawn", never "fork": OpenGL (MuJoCo EGL) contexts and torch's thread
pools do not survive a fork. With one worker everything runs in this process, so results never
depend on the number of workers as long as each job is a pure function of its arguments.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from typing import Any

Mapper = Callable[..., Iterator[Any]]


@contextlib.contextmanager
def worker_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[Mapper]:
    """Yield `imap(fn, jobs, ordered=True, chunksize=1) -> iterator of fn(job)`.

    workers <= 1: plain `map` in this process (`initializer` is NOT called: the caller sets this
    process up itself). Otherwise a spawn pool of `workers` processes, each running
    `initializer(*initargs)` once; `ordered=False` yields results as they finish. On normal exit
    the workers are closed and joined; on an exception (Ctrl-C included) they are terminated.
    """
    if workers <= 1:
        yield lambda fn, jobs, ordered=True, chunksize=1: map(fn, jobs)
        return
    pool = mp.get_context("spawn").Pool(workers, initializer=initializer, initargs=initargs)

    def imap(fn: Callable, jobs: Iterable, ordered: bool = True, chunksize: int = 1) -> Iterator:
        return (pool.imap if ordered else pool.imap_unordered)(fn, jobs, chunksize=chunksize)

    try:
        yield imap
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
