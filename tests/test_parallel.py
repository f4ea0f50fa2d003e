"""trajmoe.parallel.worker_pool: the same results in this process and on spawned workers."""

import math
import os

import pytest

from trajmoe.parallel import worker_pool


def test_worker_pool_in_process_and_spawned_agree():
    jobs = [-3, 1, -4, 1, -5, 9, -2, 6]
    with worker_pool(1) as imap:
        local = list(imap(abs, jobs))
    with worker_pool(2) as imap:
        ordered = list(imap(abs, jobs, chunksize=3))
        unordered = list(imap(abs, jobs, ordered=False))
        pids = set(imap(_pid, range(8)))
    assert local == ordered == [abs(j) for j in jobs]
    assert sorted(unordered) == sorted(local)
    assert os.getpid() not in pids


def _pid(_):
    return os.getpid()


def test_worker_pool_raises_the_workers_error():
    with pytest.raises(ValueError, match="math domain error"):
        with worker_pool(2) as imap:
            list(imap(math.sqrt, [4.0, -1.0, 9.0]))
