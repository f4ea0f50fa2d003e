"""Dataset folders that say what they are: one generator per folder (and shard), recorded
generation settings, no temporaries of a killed generator left behind."""

from __future__ import annotations

from pathlib import Path

from trajmoe.io import DirLock, check_settings, is_temp_name, read_json, remove_stale_temps

SETTINGS = "generation.json"


def prepare_dataset_folder(out: Path, settings: dict, shard: tuple[int, int], stems: dict[Path, set[str]]) -> DirLock:
    """Lock `out` for this shard, check / record its generation settings, remove this shard's temporaries.

    `settings`: the domain spec as a dict (+ generator version); a rerun may change only `episodes`,
    anything else is a one-line ValueError naming the keys. An older folder without generation.json
    is compared with its manifest's `spec`. `stems`: per task folder, the episode file stems
    (`demo_3`) this shard writes; their temporaries are removed (other shards' are left alone).
    Returns the held lock (release it when done; it dies with the process in any case).
    """
    lock = DirLock.acquire(out, ".lock" if shard == (0, 1) else f".lock-shard-{shard[0]}-of-{shard[1]}", "dataset folder")
    try:
        mpath = out / "manifest.json"
        manifest = read_json(mpath) if mpath.is_file() else {}
        old = manifest.get("spec") if isinstance(manifest, dict) else None
        fallback = {**old, "generator_version": manifest.get("generator_version")} if isinstance(old, dict) else None
        check_settings(out / SETTINGS, settings, "dataset", may_differ=("episodes",), fallback=fallback)
        if shard == (0, 1):
            remove_stale_temps(out)
        for d, mine in stems.items():
            for p in d.iterdir() if d.is_dir() else []:
                if is_temp_name(p.name) and p.name[1:].split(".")[0] in mine:
                    p.unlink(missing_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock
