"""LIBERO demonstration files: read and check one (`read_demo_file`, `load_demo`), write one (`write_demo_file`).

The layout is LIBERO's (`scripts/collect_demonstration.py`, `create_dataset.py`; the released
`libero_<suite>/<task>_demo.hdf5` files have it): `data/demo_<i>/{states, actions}`, states[t] the
simulator state before actions[t], and the `data` attribute `bddl_file_name` naming the task.
trajmoe.data.libero replays them (source "demo") and writes the expert's (`--raw-demos`).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajmoe.io import atomic_write_bytes


@dataclass(frozen=True)
class DemoFile:
    """A LIBERO demonstration file, checked: its suite and task, demo names (natural order), lengths."""

    path: str
    suite: str
    task: str
    demos: tuple[str, ...]
    lengths: tuple[int, ...]


def _demo_key(name: str) -> tuple:
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name))


def read_demo_file(path: str | Path, suite: str | None = None) -> DemoFile:
    """Open and check a LIBERO demonstration file (module doc), naming its task from the `data` attribute
    `bddl_file_name` (`.../<suite>/<task>.bddl`; the file name `<task>_demo.hdf5` when absent).

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, a key missing, shapes or values wrong,
            or a task no suite has (one line naming the file, key and value).
    """
    import h5py  # lazy: only readers of files need it

    from trajmoe.envs.libero import ACTION_DIM, find_task

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing LIBERO demonstration file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"corrupt or truncated HDF5 file {path}: {str(e).splitlines()[0]}") from None
    with f:
        if "data" not in f or not hasattr(f["data"], "keys"):
            raise ValueError(f"{path}: key 'data' is missing (not a LIBERO demonstration file)")
        data = f["data"]
        demos = sorted((k for k in data.keys() if k.startswith("demo")), key=_demo_key)
        if not demos:
            raise ValueError(f"{path}: key 'data/demo_*' is missing (no demonstrations)")
        lengths = []
        for k in demos:
            for key in ("states", "actions"):
                if key not in data[k]:
                    raise ValueError(f"{path}: key 'data/{k}/{key}' is missing")
            st, ac = data[k]["states"], data[k]["actions"]
            if ac.ndim != 2 or ac.shape[1] != ACTION_DIM:
                raise ValueError(f"{path}: key 'data/{k}/actions' must be (T, {ACTION_DIM}), got {ac.shape}")
            if st.ndim != 2 or st.shape[0] != ac.shape[0] or st.shape[0] == 0:
                raise ValueError(f"{path}: key 'data/{k}/states' must be (T={ac.shape[0]}, S) with T > 0, got {st.shape}")
            lengths.append(int(ac.shape[0]))
        bddl = data.attrs.get("bddl_file_name")
        if isinstance(bddl, bytes):
            bddl = bddl.decode()
        if bddl:
            name, folder = Path(str(bddl)).stem, Path(str(bddl)).parent.name
        elif path.stem.endswith("_demo"):
            name, folder = path.stem[: -len("_demo")], path.parent.name
        else:
            raise ValueError(f"{path}: attribute 'data@bddl_file_name' is missing and the file name is not <task>_demo.hdf5")
    try:
        found_suite, task = find_task(name, suite or folder)
    except ValueError as e:
        raise ValueError(f"{path}: data@bddl_file_name={bddl!r}: {e}") from None
    return DemoFile(str(path), found_suite, task, tuple(demos), tuple(lengths))


def load_demo(path: str | Path, demo: str) -> tuple[np.ndarray, np.ndarray]:
    """(states (T, S) float64, actions (T, 7) float64) of one demonstration, checked finite."""
    import h5py

    with h5py.File(path, "r") as f:
        out = []
        for key in ("states", "actions"):
            arr = np.asarray(f[f"data/{demo}/{key}"][()], np.float64)
            if not np.isfinite(arr).all():
                bad = np.argwhere(~np.isfinite(arr))[0].tolist()
                raise ValueError(f"{path}: key 'data/{demo}/{key}' contains NaN or inf (first at index {bad})")
            out.append(arr)
    return out[0], out[1]


def write_demo_file(path: str | Path, suite: str, task: str, demos: list[dict[str, np.ndarray]],
                    env_args: dict | None = None) -> Path:
    """Write demonstrations in LIBERO's layout (LIBERO `scripts/create_dataset.py`), atomically.

    demos: per demonstration {"states": (T, 1+nq+nv), "actions": (T, 7), and optionally "ee_pos" (T, 3),
    "gripper_states" (T, 2), "joint_states" (T, 7)}; states[t] is the state before actions[t]. Written:
    `data` attributes problem_info (JSON: problem_name, domain_name, language_instruction), bddl_file_name,
    bddl_file_content, env_name, env_args (JSON), macros_image_convention, num_demos, total;
    `data/demo_<i>/{states, actions, rewards, dones}` (reward and done 1 at the last step), `obs/<key>`
    for the proprioception given, attributes num_samples, init_state (= states[0]). No images.
    """
    import h5py

    from trajmoe.envs.libero import task_bddl, task_language

    bddl = task_bddl(suite, task)
    with open(bddl) as fh:
        bddl_text = fh.read()
    problem = re.search(r"\(problem\s+(\S+)\)", bddl_text)
    problem_name = problem.group(1).lower() if problem else ""
    info = {"problem_name": problem_name, "domain_name": "robosuite", "language_instruction": task_language(suite, task)}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        g = f.create_group("data")
        g.attrs["problem_info"] = json.dumps(info)
        g.attrs["bddl_file_name"] = bddl
        g.attrs["bddl_file_content"] = bddl_text
        g.attrs["env_name"] = problem_name
        g.attrs["env_args"] = json.dumps({"type": 1, "env_name": problem_name, "problem_name": problem_name,
                                          "bddl_file": bddl, "env_kwargs": env_args or {}})
        g.attrs["macros_image_convention"] = "opengl"
        total = 0
        for i, d in enumerate(demos):
            st, ac = np.asarray(d["states"], np.float64), np.asarray(d["actions"], np.float64)
            if st.ndim != 2 or ac.shape != (st.shape[0], 7):
                raise ValueError(f"demo {i}: states (T, S) and actions (T, 7) must have T rows, got {st.shape}, {ac.shape}")
            T = st.shape[0]
            e = g.create_group(f"demo_{i}")
            e.create_dataset("states", data=st)
            e.create_dataset("actions", data=ac)
            flag = np.zeros(T, np.uint8)
            flag[-1] = 1
            e.create_dataset("rewards", data=flag)
            e.create_dataset("dones", data=flag)
            obs = e.create_group("obs")
            for k in ("ee_pos", "gripper_states", "joint_states"):
                if k in d:
                    obs.create_dataset(k, data=np.asarray(d[k], np.float64))
            e.attrs["num_samples"] = T
            e.attrs["init_state"] = st[0]
            total += T
        g.attrs["num_demos"] = len(demos)
        g.attrs["total"] = total
    atomic_write_bytes(path, buf.getbuffer())
    return Path(path)
