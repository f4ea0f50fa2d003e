"""Headless MuJoCo rendering for the MetaWorld envs: the OpenGL backend choice, one offscreen
context + scene per env (RGB and depth from one render pass, segmentation), and the seeded
visual variation (colours, lights). See `trajmoe.envs.metaworld` for how the env uses them.
"""

from __future__ import annotations

import atexit
import os
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np


def choose_gl_backend() -> str:
    """Headless OpenGL for MuJoCo: keep MUJOCO_GL if set, else EGL, else OSMesa if only it is installed.

    MuJoCo reads MUJOCO_GL once, when `mujoco` is first imported, so this runs when this module is
    imported (before any MuJoCo import in this package).
    """
    if not os.environ.get("MUJOCO_GL"):
        import ctypes.util

        has_egl, has_osmesa = ctypes.util.find_library("EGL"), ctypes.util.find_library("OSMesa")
        os.environ["MUJOCO_GL"] = "osmesa" if (has_osmesa and not has_egl) else "egl"
    return os.environ["MUJOCO_GL"]


choose_gl_backend()  # on import: before any MuJoCo import in this package

_LIVE_RENDERERS: "weakref.WeakSet[FastRenderer]" = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_renderers() -> None:
    """Free GL contexts at exit. Registered after the first context exists, so it runs before
    mujoco.egl's own exit hook terminates the EGL display (atexit runs hooks last-in first-out).
    Another library's exit hook may terminate the display first (robosuite's EGL context, when a
    LIBERO scene ran in the same process): the process is ending, so a failing free is ignored."""
    for r in list(_LIVE_RENDERERS):
        try:
            r.close()
        except Exception:  # noqa: BLE001 - EGL display already terminated at exit
            gl, r._ctx, r._gl = getattr(r, "_gl", None), None, None
            if gl is not None and hasattr(gl, "_context"):
                gl._context = None  # or its __del__ tries again and prints the same error


class FastRenderer:
    """One offscreen OpenGL context + scene for a model; RGB and depth from one render pass."""

    def __init__(self, model: Any, height: int, width: int) -> None:
        import mujoco

        _LIVE_RENDERERS.add(self)
        self._ctx = self._gl = None

        self._mj = mujoco
        self.model = model
        self.height, self.width = height, width
        model.vis.quality.offsamples = 0  # no MSAA (must be set before the context is made)
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
            model.vis.global_.offheight = max(height, model.vis.global_.offheight)
        if mujoco.GLContext is None or "glfw" in getattr(mujoco.GLContext, "__module__", ""):
            raise ValueError(
                "MuJoCo was imported with a windowed OpenGL backend; set MUJOCO_GL=egl (or osmesa) before importing mujoco"
            )
        self._gl = mujoco.GLContext(width, height)
        self._gl.make_current()
        global _ATEXIT_REGISTERED
        if not _ATEXIT_REGISTERED:
            atexit.register(_close_renderers)
            _ATEXIT_REGISTERED = True
        self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self.scene = mujoco.MjvScene(model, maxgeom=max(1000, 2 * model.ngeom))
        self.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.option = mujoco.MjvOption()
        self.option.sitegroup[:] = 0  # hide sites: goal markers must not show in images
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._cams: dict[str, Any] = {}
        extent = model.stat.extent
        # Linearise the depth buffer exactly as mujoco.Renderer does (ZEROFAR depth map).
        zfar, znear = np.float32(model.vis.map.zfar * extent), np.float32(model.vis.map.znear * extent)
        c_coef = -(zfar + znear) / (zfar - znear)
        d_coef = -(np.float32(2) * zfar * znear) / (zfar - znear)
        self._c = np.float32(-0.5) * c_coef - np.float32(0.5)
        self._d = np.float32(-0.5) * d_coef

    def _camera(self, name: str) -> Any:
        cam = self._cams.get(name)
        if cam is None:
            mj = self._mj
            cid = mj.mj_name2id(self.model, mj.mjtObj.mjOBJ_CAMERA, name)
            if cid < 0:
                raise ValueError(f"camera {name!r} is not in the model")
            cam = mj.MjvCamera()
            cam.type = mj.mjtCamera.mjCAMERA_FIXED
            cam.fixedcamid = cid
            self._cams[name] = cam
        return cam

    def render(self, data: Any, camera: str, depth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(H, W, 3) uint8 RGB and optionally (H, W) float32 depth in metres, image row 0 at the top."""
        mj = self._mj
        self._gl.make_current()
        mj.mjv_updateScene(self.model, data, self.option, None, self._camera(camera), mj.mjtCatBit.mjCAT_ALL, self.scene)
        mj.mjr_render(self._rect, self.scene, self._ctx)
        rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
        buf = np.empty((self.height, self.width), dtype=np.float32) if depth else None
        mj.mjr_readPixels(rgb, buf, self._rect, self._ctx)
        rgb = rgb[::-1]  # OpenGL rows start at the bottom
        if buf is not None:
            buf = (self._d / (buf.astype(np.float64) + self._c)).astype(np.float32)[::-1]
        return rgb, buf

    def render_segmentation(self, data: Any, camera: str) -> np.ndarray:
        """(H, W) int32 geom ids, -1 where no geom is seen."""
        mj = self._mj
        self._gl.make_current()
        mj.mjv_updateScene(self.model, data, self.option, None, self._camera(camera), mj.mjtCatBit.mjCAT_ALL, self.scene)
        flags = self.scene.flags.copy()
        self.scene.flags[mj.mjtRndFlag.mjRND_SEGMENT] = 1
        self.scene.flags[mj.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            mj.mjr_render(self._rect, self.scene, self._ctx)
            rgb = np.empty((self.height, self.width, 3), dtype=np.uint8)
            mj.mjr_readPixels(rgb, None, self._rect, self._ctx)
        finally:
            np.copyto(self.scene.flags, flags)
        rgb = rgb[::-1].astype(np.int64)
        seg_plus1 = rgb[..., 0] + rgb[..., 1] * 256 + rgb[..., 2] * 65536  # 0 = background
        ngeom = self.scene.ngeom
        lut = np.full(ngeom + 2, -1, dtype=np.int32)
        for g in self.scene.geoms[:ngeom]:
            if g.segid >= 0 and g.objtype == mj.mjtObj.mjOBJ_GEOM:
                lut[g.segid + 1] = g.objid
        return lut[np.clip(seg_plus1, 0, ngeom + 1)]

    def close(self) -> None:
        """Free the renderer's GL context (idempotent)."""
        if getattr(self, "_ctx", None) is not None:
            self._ctx.free()
            self._ctx = None
        if getattr(self, "_gl", None) is not None:
            self._gl.free()
            self._gl = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def rotate180(img: np.ndarray) -> np.ndarray:
    """An (H, W, ...) image turned by 180 degrees (the upside-down `corner*` cameras)."""
    return np.ascontiguousarray(img[::-1, ::-1])


# ---- visual variation ---------------------------------------------------------------------


@dataclass
class VisualDefaults:
    """The model's colours and lights as loaded: every visual variation starts from them."""

    geom_rgba: np.ndarray
    light_diffuse: np.ndarray
    light_ambient: np.ndarray
    light_specular: np.ndarray
    light_pos: np.ndarray
    head_ambient: np.ndarray
    head_diffuse: np.ndarray

    @classmethod
    def capture(cls, m: Any) -> "VisualDefaults":
        """Record the model's default colours and lights so a visual variation can be undone."""
        rgba = m.geom_rgba.copy()
        # A geom with a material and MuJoCo's default rgba is drawn in the material colour.
        default = np.all(np.isclose(rgba, [0.5, 0.5, 0.5, 1.0]), axis=1) & (m.geom_matid >= 0)
        rgba[default] = m.mat_rgba[m.geom_matid[default]]
        return cls(
            rgba, m.light_diffuse.copy(), m.light_ambient.copy(), m.light_specular.copy(), m.light_pos.copy(),
            m.vis.headlight.ambient.copy(), m.vis.headlight.diffuse.copy(),
        )

    def restore(self, m: Any) -> None:
        """Put the recorded colours and lights back into the MuJoCo model `m`."""
        m.geom_rgba[:] = self.geom_rgba
        m.light_diffuse[:], m.light_ambient[:], m.light_specular[:] = self.light_diffuse, self.light_ambient, self.light_specular
        m.light_pos[:] = self.light_pos
        m.vis.headlight.ambient[:], m.vis.headlight.diffuse[:] = self.head_ambient, self.head_diffuse


def apply_visual_variation(m: Any, body_is_static: np.ndarray, seed: int) -> None:
    """Randomise colours and lighting in place (deterministic in `seed`).

    Static scene geoms (table, walls, floor) get strong per-channel tints, moving bodies (objects,
    robot) milder ones; lights get random intensities and jittered positions.
    """
    rng = np.random.default_rng([7919, int(seed)])
    static_geom = body_is_static[m.geom_bodyid]
    tint = np.where(static_geom[:, None], rng.uniform(0.45, 1.55, (m.ngeom, 3)), rng.uniform(0.7, 1.3, (m.ngeom, 3)))
    # one random colour shift per static body, so a table top stays one colour
    body_shift = rng.uniform(-0.15, 0.15, (m.nbody, 3))
    rgb = m.geom_rgba[:, :3] * tint + np.where(static_geom[:, None], body_shift[m.geom_bodyid], 0.0)
    m.geom_rgba[:, :3] = np.clip(rgb, 0.0, 1.0)
    if m.nlight:
        m.light_diffuse[:] = np.clip(m.light_diffuse * rng.uniform(0.5, 1.3, (m.nlight, 1)), 0.0, 1.0)
        m.light_ambient[:] = rng.uniform(0.0, 0.3, (m.nlight, 3))
        m.light_specular[:] = np.clip(m.light_specular * rng.uniform(0.3, 1.0, (m.nlight, 1)), 0.0, 1.0)
        m.light_pos[:] = m.light_pos + rng.uniform(-0.5, 0.5, (m.nlight, 3))
    m.vis.headlight.ambient[:] = rng.uniform(0.0, 0.35, 3)
    m.vis.headlight.diffuse[:] = rng.uniform(0.3, 0.8, 3)

