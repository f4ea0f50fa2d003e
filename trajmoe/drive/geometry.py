"""Geometry shared by scenes and the scorer: ego frames, boxes, the drivable-area raster.

Raster (ego frame, x forward, y left): cells of RES m covering X_RANGE x Y_RANGE. Per cell:
- `dir_bits` uint8: bit b is set when a lane whose heading falls in the 45-degree bin b
  ([b*45, (b+1)*45) degrees, ego frame) covers the cell. Nonzero = drivable (DAC); the bits also
  tell oncoming lanes apart (DDC).
- `centre_dm` uint8: distance to the nearest lane centreline in decimetres (saturates at 25.5 m), LK.
- `junction` bool: cell covered by a lane inside an intersection (LK does not apply there).
Everything outside the raster counts as not drivable: its extent (-30..170 m forward, +-60 m
lateral) holds any 4 s plan up to 42 m/s.
Units: m and rad (heading counter-clockwise from +x). Legend: M polyline points, R route points.
"""

from __future__ import annotations

import numpy as np

RES = 0.25  # m per raster cell
X_RANGE = (-30.0, 170.0)
Y_RANGE = (-60.0, 60.0)
H_CELLS = int(round((Y_RANGE[1] - Y_RANGE[0]) / RES))  # rows along y
W_CELLS = int(round((X_RANGE[1] - X_RANGE[0]) / RES))  # cols along x
N_DIR_BINS = 8

# NAVSIM's ego vehicle (Chrysler Pacifica), distances from the rear axle (the NAVSIM v2 scorer (Dauner et al.)).
PACIFICA_WIDTH = 2.297
PACIFICA_FRONT = 4.049
PACIFICA_REAR = 1.127
PACIFICA_WHEELBASE = 3.089
PACIFICA_LENGTH = PACIFICA_FRONT + PACIFICA_REAR
# Poses are the box centre here (highway-env positions are centres); the centre sits this far
# ahead of the rear axle.
PACIFICA_CENTRE_OFFSET = (PACIFICA_FRONT - PACIFICA_REAR) / 2.0


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles (...) rad -> the same angles in [-pi, pi)."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def to_frame(xy: np.ndarray, heading: np.ndarray | None, origin_xyh: np.ndarray):
    """World points xy (..., 2) m [and headings (...) rad] -> the frame of pose `origin_xyh` =
    (x0 m, y0 m, h0 rad): points (..., 2), or (points, wrapped headings) when heading is given."""
    x0, y0, h0 = origin_xyh
    c, s = np.cos(h0), np.sin(h0)
    d = np.asarray(xy, dtype=np.float64) - np.array([x0, y0])
    local = np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)
    if heading is None:
        return local
    return local, wrap_angle(np.asarray(heading) - h0)


def from_frame(xy: np.ndarray, heading: np.ndarray | None, origin_xyh: np.ndarray):
    """Inverse of `to_frame`: frame points (..., 2) m [and headings rad] -> world."""
    x0, y0, h0 = origin_xyh
    c, s = np.cos(h0), np.sin(h0)
    xy = np.asarray(xy, dtype=np.float64)
    world = np.stack([c * xy[..., 0] - s * xy[..., 1] + x0, s * xy[..., 0] + c * xy[..., 1] + y0], axis=-1)
    if heading is None:
        return world
    return world, wrap_angle(np.asarray(heading) + h0)


def box_corners(xy: np.ndarray, heading: np.ndarray, length, width) -> np.ndarray:
    """Box centres xy (..., 2) m, headings (...) rad, length / width m (scalars or (...)) -> (..., 4, 2)
    corners (front-left, front-right, rear-right, rear-left)."""
    c, s = np.cos(heading)[..., None], np.sin(heading)[..., None]
    hl = np.asarray(length, dtype=np.float64)[..., None] / 2.0 if np.ndim(length) else np.full(1, length / 2.0)
    hw = np.asarray(width, dtype=np.float64)[..., None] / 2.0 if np.ndim(width) else np.full(1, width / 2.0)
    sx = np.array([1.0, 1.0, -1.0, -1.0])
    sy = np.array([1.0, -1.0, -1.0, 1.0])
    lx, ly = sx * hl, sy * hw  # (..., 4)
    x = xy[..., 0:1] + c * lx - s * ly
    y = xy[..., 1:2] + s * lx + c * ly
    return np.stack([x, y], axis=-1)


def cell_index(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ego-frame points (..., 2) -> (row, col, inside) raster indices; outside points get row=col=0."""
    col = np.floor((xy[..., 0] - X_RANGE[0]) / RES).astype(np.int64)
    row = np.floor((xy[..., 1] - Y_RANGE[0]) / RES).astype(np.int64)
    inside = (col >= 0) & (col < W_CELLS) & (row >= 0) & (row < H_CELLS)
    return np.where(inside, row, 0), np.where(inside, col, 0), inside


def heading_bit(heading: np.ndarray) -> np.ndarray:
    """Direction bin bit (1 << bin, uint8) of each heading (...) rad, ego frame, 45-degree bins."""
    b = np.floor((np.mod(heading, 2 * np.pi)) / (2 * np.pi / N_DIR_BINS)).astype(np.int64) % N_DIR_BINS
    return (1 << b).astype(np.uint8)


def compatible_bits(heading: np.ndarray, max_angle_deg: float = 90.0) -> np.ndarray:
    """Bitmask of the direction bins whose centre lies within `max_angle_deg` of `heading` (uint8)."""
    centres = (np.arange(N_DIR_BINS) + 0.5) * (2 * np.pi / N_DIR_BINS)
    diff = np.abs(wrap_angle(np.asarray(heading)[..., None] - centres))
    ok = diff <= np.deg2rad(max_angle_deg)
    return (ok * (1 << np.arange(N_DIR_BINS))).sum(-1).astype(np.uint8)


def rasterise_lanes(lanes_ego: list[dict]) -> dict[str, np.ndarray]:
    """Lanes in the ego frame (dicts with xy (M,2) dense centreline, heading (M,), width (M,),
    junction bool) -> {'dir_bits', 'centre_dm', 'junction'} rasters (H_CELLS, W_CELLS)."""
    # scipy is imported lazily here and in comfort.py: scipy.ndimage + scipy.signal take ~2.5 s to
    # import (measured after torch), and the planner imports this module (drive.model ->
    # drive.config -> drive.metrics) without ever rasterising or scoring.
    from scipy.ndimage import distance_transform_edt

    dir_bits = np.zeros((H_CELLS, W_CELLS), np.uint8)
    junction = np.zeros((H_CELLS, W_CELLS), bool)
    centre = np.zeros((H_CELLS, W_CELLS), bool)
    for lane in lanes_ego:
        xy, h, w = lane["xy"], lane["heading"], lane["width"]
        if len(xy) < 2:
            continue
        # Sweep lateral offsets across the lane width (0.1 m apart, one cell beyond each edge) at every
        # centreline sample; keep a hit only when the centre of the cell hit lies inside the lane
        # strip, so the marked area is symmetric about the centreline (a cell is drivable iff its
        # centre is on the lane).
        n_off = int(np.ceil((w.max() + 2 * RES) / 0.1)) + 1
        frac = np.linspace(-0.5, 0.5, n_off)  # (O,)
        off = frac[None, :] * (w[:, None] + 2 * RES)  # (M, O)
        nx, ny = -np.sin(h), np.cos(h)  # left normal
        px = xy[:, 0:1] + off * nx[:, None]
        py = xy[:, 1:2] + off * ny[:, None]
        r, c, ins = cell_index(np.stack([px, py], -1))
        cx = X_RANGE[0] + (c + 0.5) * RES
        cy = Y_RANGE[0] + (r + 0.5) * RES
        lat = (cx - xy[:, 0:1]) * nx[:, None] + (cy - xy[:, 1:2]) * ny[:, None]
        ins &= np.abs(lat) <= w[:, None] / 2.0
        bits = np.broadcast_to(heading_bit(h)[:, None], r.shape)
        np.bitwise_or.at(dir_bits, (r[ins], c[ins]), bits[ins])
        if lane["junction"]:
            junction[r[ins], c[ins]] = True
        r0, c0, ins0 = cell_index(xy)
        centre[r0[ins0], c0[ins0]] = True
    dir_bits = _close_gaps(dir_bits)
    if centre.any():
        dist = distance_transform_edt(~centre, sampling=RES)
    else:
        dist = np.full((H_CELLS, W_CELLS), np.inf)
    centre_dm = np.minimum(np.round(dist * 10.0), 255).astype(np.uint8)
    return {"dir_bits": dir_bits, "centre_dm": centre_dm, "junction": junction}


SHOULDER = 0.75  # m of drivable shoulder beyond the outer lane edges (symmetric)


def _close_gaps(dir_bits: np.ndarray, radius_m: float = 1.5, shoulder_m: float = SHOULDER) -> np.ndarray:
    """Morphological closing of the drivable mask (fills the slivers where highway-env's lanes meet
    without overlapping, e.g. roundabout entries, as a road polygon would) plus a `shoulder_m`
    dilation (highway-env's own vehicles, 2 m wide, put a corner a few decimetres past the lane edge
    when entering roundabouts; NAVSIM's road polygons extend past the lane lines too). Filled cells
    take the direction bits of the nearest lane cell."""
    from scipy.ndimage import binary_closing, binary_dilation, distance_transform_edt  # lazy: see rasterise_lanes

    drivable = dir_bits != 0
    if not drivable.any():
        return dir_bits
    r = int(round(radius_m / RES))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    closed = binary_closing(drivable, structure=(xx**2 + yy**2) <= r * r, border_value=0)
    rs = int(round(shoulder_m / RES))
    if rs > 0:
        ys, xs = np.mgrid[-rs : rs + 1, -rs : rs + 1]
        closed = binary_dilation(closed, structure=(xs**2 + ys**2) <= rs * rs)
    new = closed & ~drivable
    if new.any():
        _, (ri, ci) = distance_transform_edt(~drivable, return_indices=True)
        dir_bits = dir_bits.copy()
        dir_bits[new] = dir_bits[ri[new], ci[new]]
    return dir_bits


def polyline_arclength(poly: np.ndarray) -> np.ndarray:
    """(M, 2) polyline (m) -> (M,) cumulative arc length (m), 0 at the first point."""
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=-1)
    return np.concatenate([[0.0], np.cumsum(seg)])


def project_on_polyline(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Arc-length coordinate (m) of each point (..., 2) projected on polyline (M, 2) -> (...)."""
    a, b = poly[:-1], poly[1:]  # (S, 2)
    ab = b - a
    L2 = np.maximum((ab**2).sum(-1), 1e-12)
    p = pts[..., None, :]  # (..., 1, 2)
    t = np.clip(((p - a) * ab).sum(-1) / L2, 0.0, 1.0)  # (..., S)
    proj = a + t[..., None] * ab
    d2 = ((p - proj) ** 2).sum(-1)
    j = d2.argmin(-1)  # (...)
    s_cum = polyline_arclength(poly)
    seg_len = np.sqrt(L2)
    tj = np.take_along_axis(t, j[..., None], -1)[..., 0]
    return s_cum[j] + tj * seg_len[j]


ROUTE_STEP = 0.1  # m between the dense route points the route raster indexes


def dense_route(route: np.ndarray) -> np.ndarray:
    """(R, 2) route polyline (m) -> (M, 2) resampled every ROUTE_STEP m (at most 32767 points).
    Raises ValueError for fewer than 2 distinct points."""
    route = np.asarray(route, dtype=np.float64)
    s = polyline_arclength(route)
    if len(route) < 2 or s[-1] <= 0:
        raise ValueError(f"route must have at least 2 distinct points, got {len(route)}")
    q = np.arange(0.0, s[-1] + 1e-9, ROUTE_STEP)[:32767]
    return np.stack([np.interp(q, s, route[:, 0]), np.interp(q, s, route[:, 1])], -1)


def rasterise_route(route: np.ndarray) -> np.ndarray:
    """(H_CELLS, W_CELLS) int16 raster: index of the dense route point (`dense_route`) nearest to
    each cell (through the nearest cell holding a route point). Raises ValueError for a route with
    fewer than 2 distinct points."""
    from scipy.ndimage import distance_transform_edt  # lazy: see rasterise_lanes

    pts = dense_route(route)
    r, c, ins = cell_index(pts)
    owner = np.full((H_CELLS, W_CELLS), -1, np.int32)
    owner[r[ins], c[ins]] = np.nonzero(ins)[0]
    if not ins.any():  # route entirely outside the raster: every cell points at the nearest end
        d0 = np.linalg.norm(pts[0]) < np.linalg.norm(pts[-1])
        return np.full((H_CELLS, W_CELLS), 0 if d0 else len(pts) - 1, np.int16)
    _, (ri, ci) = distance_transform_edt(owner < 0, return_indices=True)
    return owner[ri, ci].astype(np.int16)


def route_tangents(pts: np.ndarray) -> np.ndarray:
    """(M, 2) dense route (m) -> (M,) heading (rad) of the route at each point (central differences)."""
    d = np.gradient(pts, axis=0) if len(pts) > 1 else np.array([[1.0, 0.0]])
    return np.arctan2(d[:, 1], d[:, 0])


def route_coordinates(xy: np.ndarray, pts: np.ndarray, idx_raster: np.ndarray, tangents: tuple):
    """Points (..., 2) -> (arc length along the route, distance to it, index of the nearest dense
    route point), each (...). idx_raster: `pad_raster(rasterise_route(route), -1)`; tangents:
    (cos, sin) of `route_tangents`.

    The nearest dense route point j comes from the raster (a coarse brute-force search outside it);
    the point is then projected on the route's tangent at j (error second order in the 0.1 m
    spacing and the curvature)."""
    j = idx_raster[flat_index(xy)].astype(np.int64)  # -1 on the border (outside the raster)
    far = j < 0
    if far.any():
        d2 = ((xy[far][:, None, :] - pts[None, ::10]) ** 2).sum(-1)
        j[far] = np.argmin(d2, -1) * 10
    ch, sh = tangents[0][j], tangents[1][j]
    dx, dy = xy[..., 0] - pts[:, 0][j], xy[..., 1] - pts[:, 1][j]
    along = dx * ch + dy * sh
    lat = -dx * sh + dy * ch
    return j * ROUTE_STEP + along, np.abs(lat), j


def pad_raster(raster: np.ndarray, outside) -> np.ndarray:
    """(H_CELLS, W_CELLS) raster -> ((H_CELLS + 2) * (W_CELLS + 2),) flattened copy with a one-cell
    border of `outside`, indexed by `flat_index`."""
    out = np.full((H_CELLS + 2, W_CELLS + 2), outside, dtype=raster.dtype)
    out[1:-1, 1:-1] = raster
    return out.ravel()


def flat_index(xy: np.ndarray) -> np.ndarray:
    """Points (..., 2) -> indices into a `pad_raster` array (points outside map to its border)."""
    col = np.clip((xy[..., 0] - (X_RANGE[0] - RES)) * (1.0 / RES), 0.0, W_CELLS + 1.0).astype(np.int32)
    row = np.clip((xy[..., 1] - (Y_RANGE[0] - RES)) * (1.0 / RES), 0.0, H_CELLS + 1.0).astype(np.int32)
    row *= W_CELLS + 2
    row += col
    return row
