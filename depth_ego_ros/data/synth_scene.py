"""What a synthetic world is made of: the road centre line and the primitives of a scene.

A :class:`Scene` holds numpy arrays of primitives (world frame, z up, metres):

* an infinite ground plane ``z = 0`` (road, sidewalk and verge textures from road coordinates,
  see :class:`Road`), optionally a ceiling plane ``z = ceiling`` (corridors);
* oriented boxes (yaw about z; buildings, walls, crates, cars);
* vertical cylinders (poles, tree trunks; with a top cap);
* spheres (tree crowns);

plus the look of the world (ground colours, sun, haze, texture scale). ``finalize`` derives what
the ray caster needs (bounding-box corners, one object table). The material ids (``MAT_*``) name
the procedural textures of :mod:`.synth_textures`; the ``KIND_*`` ids are what a ray can hit.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

# material ids --------------------------------------------------------------------------------
MAT_FACADE, MAT_BRICK, MAT_CONCRETE, MAT_CRATE, MAT_CAR, MAT_METAL, MAT_BARK, MAT_FOLIAGE, \
    MAT_TILE_WALL, MAT_GLASS_CABIN = range(10)

KIND_NONE, KIND_GROUND, KIND_CEILING, KIND_BOX, KIND_CYL, KIND_SPHERE = range(6)


@dataclass
class Road:
    """Densely sampled road centre line (arc length s, position, heading)."""
    s: np.ndarray          # (R,) arc length, metres, uniform spacing
    xy: np.ndarray         # (R,2)
    heading: np.ndarray    # (R,) radians
    half_width: float      # carriageway half width (m)
    sidewalk: float        # sidewalk width (m)
    lane_dash: float = 3.0  # dash length of the centre line (m)

    def point(self, s):
        s = np.clip(s, self.s[0], self.s[-1])
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        return np.stack([x, y], axis=-1)

    def heading_at(self, s):
        return np.interp(np.clip(s, self.s[0], self.s[-1]), self.s, np.unwrap(self.heading))

    def coords(self, p, s_hint: float, window: float):
        """Road coordinates (s, lateral; lateral > 0 = left of the direction of travel) of ground
        points p (n,2), searching centre-line samples within +-window of s_hint."""
        ds = self.s[1] - self.s[0]
        step = max(1, int(round(2.0 / ds)))  # coarse samples every ~2 m
        i0 = max(0, int((s_hint - window - self.s[0]) / ds))
        i1 = min(len(self.s), int((s_hint + window - self.s[0]) / ds) + 1)
        idx = np.arange(i0, i1, step)
        if len(idx) == 0:
            idx = np.array([0])
        c = self.xy[idx].astype(np.float32)
        p32 = p.astype(np.float32)
        d2 = ((p32[:, None, 0] - c[None, :, 0]) ** 2 + (p32[:, None, 1] - c[None, :, 1]) ** 2)
        k = idx[np.argmin(d2, axis=1)]
        s = self.s[k].astype(np.float64)
        for _ in range(2):  # project on the local tangent, twice (exact to mm for R >= 10 m)
            h = self.heading_at(s)
            q = p - self.point(s)
            s = s + q[:, 0] * np.cos(h) + q[:, 1] * np.sin(h)
        h = self.heading_at(s)
        q = p - self.point(s)
        lat = -q[:, 0] * np.sin(h) + q[:, 1] * np.cos(h)
        return s, lat


@dataclass
class Scene:
    """All primitives of one world (world frame, z up, metres)."""
    road: Road
    # boxes: centre (x, y, z), half extents (hx along yaw, hy across, hz), yaw
    box_c: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box_h: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box_yaw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    box_mat: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    box_col: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    box_par: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # per-object texture params
    # vertical cylinders: centre (x, y), radius, z0, z1
    cyl_c: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    cyl_r: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cyl_z: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    cyl_mat: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    cyl_col: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    # spheres: centre (x, y, z), radius
    sph_c: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    sph_r: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sph_mat: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    sph_col: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    ceiling: float | None = None
    # look
    ground_colors: np.ndarray = field(default_factory=lambda: np.array(
        [[0.20, 0.20, 0.21], [0.50, 0.48, 0.45], [0.30, 0.38, 0.18]]))  # asphalt, sidewalk, verge
    ceiling_color: np.ndarray = field(default_factory=lambda: np.array([0.75, 0.74, 0.70]))
    sun_dir: np.ndarray = field(default_factory=lambda: np.array([0.4, 0.3, 0.866]))
    sun_color: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.96, 0.88]))
    ambient: float = 0.40
    haze_distance: float = 350.0
    texture_scale: float = 1.0   # multiplies every texture wavelength (a "different-looking" world)
    indoor: bool = False         # no sky light from above (uniform ambient) when True
    markings: bool = True        # lane markings on the road

    def finalize(self):
        """Derived per-object data used by the renderer (bounding-box corners, object table)."""
        self.sun_dir = np.asarray(self.sun_dir, float) / np.linalg.norm(self.sun_dir)
        corners = []
        sgn = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        for c, h, yaw in zip(self.box_c, self.box_h, self.box_yaw):
            R = _rot_z(yaw)
            corners.append(c + (sgn * h) @ R.T)
        for c, r, z in zip(self.cyl_c, self.cyl_r, self.cyl_z):
            lo = np.array([c[0] - r, c[1] - r, z[0]])
            hi = np.array([c[0] + r, c[1] + r, z[1]])
            corners.append(lo + (sgn + 1) / 2 * (hi - lo))
        for c, r in zip(self.sph_c, self.sph_r):
            corners.append(c + sgn * r)
        self.corners = np.array(corners, float).reshape(-1, 8, 3)
        nb, nc, ns = len(self.box_c), len(self.cyl_c), len(self.sph_c)
        self.obj_kind = np.concatenate([np.full(nb, KIND_BOX), np.full(nc, KIND_CYL),
                                        np.full(ns, KIND_SPHERE)]).astype(int)
        self.obj_index = np.concatenate([np.arange(nb), np.arange(nc), np.arange(ns)]).astype(int)
        self.obj_centre = self.corners.mean(axis=1) if len(self.corners) else np.zeros((0, 3))
        self.obj_radius = (np.linalg.norm(self.corners - self.obj_centre[:, None], axis=2).max(axis=1)
                           if len(self.corners) else np.zeros(0))
        return self

    def with_boxes(self, centre, half, yaw, mat, col, par):
        """A copy of this (finalized) scene with extra boxes appended after its own boxes (the
        per-frame moving objects): box index ``len(self.box_c) + k`` is extra box k. Only the
        new boxes' derived data is computed, so this is cheap for a large static scene."""
        centre, half = np.asarray(centre, float).reshape(-1, 3), np.asarray(half, float).reshape(-1, 3)
        yaw = np.asarray(yaw, float).reshape(-1)
        m = len(centre)
        new = copy.copy(self)
        nb = len(self.box_c)
        new.box_c = np.concatenate([self.box_c, centre])
        new.box_h = np.concatenate([self.box_h, half])
        new.box_yaw = np.concatenate([self.box_yaw, yaw])
        new.box_mat = np.concatenate([self.box_mat, np.asarray(mat, int).reshape(-1)])
        new.box_col = np.concatenate([self.box_col, np.asarray(col, float).reshape(-1, 3)])
        new.box_par = np.concatenate([self.box_par, np.asarray(par, float).reshape(-1, 4)])
        sgn = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        corners = np.array([c + (sgn * h) @ _rot_z(a).T for c, h, a in zip(centre, half, yaw)],
                           float).reshape(-1, 8, 3)
        new.corners = np.concatenate([self.corners[:nb], corners, self.corners[nb:]])
        new.obj_kind = np.concatenate([self.obj_kind[:nb], np.full(m, KIND_BOX, int), self.obj_kind[nb:]])
        new.obj_index = np.concatenate([np.arange(nb + m), self.obj_index[nb:]]).astype(int)
        cen = corners.mean(axis=1)
        rad = np.linalg.norm(corners - cen[:, None], axis=2).max(axis=1)
        new.obj_centre = np.concatenate([self.obj_centre[:nb], cen, self.obj_centre[nb:]])
        new.obj_radius = np.concatenate([self.obj_radius[:nb], rad, self.obj_radius[nb:]])
        return new


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


__all__ = ['KIND_BOX', 'KIND_CEILING', 'KIND_CYL', 'KIND_GROUND', 'KIND_NONE', 'KIND_SPHERE',
           'MAT_BARK', 'MAT_BRICK', 'MAT_CAR', 'MAT_CONCRETE', 'MAT_CRATE', 'MAT_FACADE',
           'MAT_FOLIAGE', 'MAT_GLASS_CABIN', 'MAT_METAL', 'MAT_TILE_WALL', 'Road', 'Scene']
