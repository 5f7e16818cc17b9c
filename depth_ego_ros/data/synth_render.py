"""Vectorised ray caster and procedural materials of the synthetic world.

Scene content lives in a :class:`Scene` (numpy arrays of primitives, world frame z up):

* an infinite ground plane ``z = 0`` (road, sidewalk and verge textures from road coordinates),
  optionally a ceiling plane ``z = ceiling`` (corridors);
* oriented boxes (yaw about z; buildings, walls, crates, parked cars);
* vertical cylinders (poles, tree trunks; with a top cap);
* spheres (tree crowns).

Rendering one frame (:meth:`Renderer.render`):

1. one ray per pixel centre (u, v) = (column, row), direction ``R_wc @ K^-1 (u, v, 1)`` -- the
   ray parameter ``t`` then *is* the z-depth along the optical axis;
2. planes are intersected for all pixels at once; each other primitive is intersected only with
   the pixels inside the screen rectangle of its (near-plane clipped) bounding box, a z-buffer
   keeps the nearest hit -- like a rasteriser, so the cost grows with covered pixels, not with
   pixels x primitives;
3. materials are evaluated per pixel from surface coordinates fixed to the object (so texture
   moves exactly with the geometry), with filtered multi-octave value noise and anti-aliased
   patterns (octaves and lines finer than the pixel footprint fade to their mean, which keeps
   textures free of flicker between frames);
4. Lambertian sun + sky ambient shading, a little ambient occlusion near the ground, distance
   haze; rays that hit nothing see the sky (depth +inf).

Everything is deterministic: the noise tables come from the world seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# material ids --------------------------------------------------------------------------------
MAT_FACADE, MAT_BRICK, MAT_CONCRETE, MAT_CRATE, MAT_CAR, MAT_METAL, MAT_BARK, MAT_FOLIAGE, \
    MAT_TILE_WALL, MAT_GLASS_CABIN = range(10)

KIND_NONE, KIND_GROUND, KIND_CEILING, KIND_BOX, KIND_CYL, KIND_SPHERE = range(6)

_NOISE_SIZE = 512


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
        import copy
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


_BOX_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8)
                       if bin(a ^ b).count('1') == 1])  # 12 edges of the corner cube


# ----------------------------------------------------------------------------------------------
# noise and anti-aliased patterns
# ----------------------------------------------------------------------------------------------
class Noise:
    """Filtered value noise on a 512x512 lattice table (seeded)."""

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed + 7919)
        self.table = rng.random(_NOISE_SIZE * _NOISE_SIZE).astype(np.float32)
        self.offsets = rng.random((16, 2)).astype(np.float32) * 1000.0

    def value(self, x, y):
        """Smooth value noise in [0, 1], lattice spacing 1."""
        xf = np.floor(x)
        yf = np.floor(y)
        fx = (x - xf).astype(np.float32)
        fy = (y - yf).astype(np.float32)
        xi = xf.astype(np.int64) & (_NOISE_SIZE - 1)
        yi = yf.astype(np.int64) & (_NOISE_SIZE - 1)
        xi1 = (xi + 1) & (_NOISE_SIZE - 1)
        yi1 = (yi + 1) * _NOISE_SIZE & (_NOISE_SIZE * _NOISE_SIZE - 1)
        yi = yi * _NOISE_SIZE
        t = self.table
        ux = fx * fx * (3 - 2 * fx)
        uy = fy * fy * (3 - 2 * fy)
        a = t[yi + xi]
        b = t[yi + xi1]
        c = t[yi1 + xi]
        d = t[yi1 + xi1]
        top = a + (b - a) * ux
        bot = c + (d - c) * ux
        return top + (bot - top) * uy

    def fbm(self, x, y, wavelength, footprint, octaves=5, gain=0.55, slot=0):
        """Fractal noise in ~[0,1] (mean 0.5); octaves whose wavelength is under two pixel
        footprints fade to their mean, so distant surfaces do not alias."""
        total = np.zeros(np.shape(x), np.float32)
        amp, norm = 1.0, 0.0
        lam = float(wavelength)
        for k in range(octaves):
            ox, oy = self.offsets[(slot * 5 + k) % 16]
            w = _lod_weight(lam, footprint)
            n = self.value(x / lam + ox, y / lam + oy)
            total += amp * (0.5 + w * (n - 0.5))
            norm += amp
            amp *= gain
            lam *= 0.5
        return total / norm


def _lod_weight(wavelength, footprint):
    """Level-of-detail weight of a pattern with this wavelength seen with this pixel footprint:
    1 when the wavelength spans >= 6 footprints, 0 below 1.5, a ramp in log scale between. A
    log ramp changes slowly as the camera approaches (a 20 % closer surface moves the weight by
    at most 0.13), so textures stay consistent between frames while avoiding aliasing."""
    r = np.asarray(wavelength, np.float32) / np.maximum(np.asarray(footprint, np.float32), 1e-6)
    return np.clip(np.log2(np.maximum(r, 1e-6) / 1.5) * 0.5, 0.0, 1.0).astype(np.float32)


def _lines(x, period, width, footprint):
    """Coverage in [0,1] of lines of the given width repeating every `period` (anti-aliased)."""
    d = np.abs((x / period) % 1.0 - 0.5) * period  # distance to the middle of a period...
    d = period / 2 - d                               # ... -> distance to the nearest line centre
    fw = np.maximum(footprint, 1e-6)
    cov = np.clip((width / 2 - d) / fw + 0.5, 0.0, 1.0)
    mean = width / period
    fade = 1.0 - _lod_weight(period, fw)                 # footprint ~ period -> mean coverage
    return (cov * (1 - fade) + mean * fade).astype(np.float32)


def _box_pulse(x, lo, hi, footprint):
    """Anti-aliased indicator of lo <= x <= hi."""
    fw = np.maximum(footprint, 1e-6)
    return np.clip(np.minimum(x - lo, hi - x) / fw + 0.5, 0.0, 1.0).astype(np.float32)


def _rect_grid(u, v, pu, pv, w, h, u0, v0, footprint):
    """Coverage of a grid of w x h rectangles with periods pu, pv (rect starts at u0, v0 in each
    cell). Anti-aliased; fades to mean coverage when cells get small on screen."""
    fu = (u - u0) % pu
    fv = (v - v0) % pv
    cu = _box_pulse(fu, 0.0, w, footprint)
    cv = _box_pulse(fv, 0.0, h, footprint)
    cov = cu * cv
    mean = (w / pu) * (h / pv)
    fade = 1.0 - _lod_weight(0.5 * np.minimum(pu, pv), footprint)
    return cov * (1 - fade) + mean * fade


# ----------------------------------------------------------------------------------------------
# the renderer
# ----------------------------------------------------------------------------------------------
class Renderer:
    """Ray caster for one image size and intrinsics."""

    def __init__(self, scene: Scene, K: np.ndarray, width: int, height: int, seed: int,
                 max_distance: float = 150.0, supersample: int = 1):
        self.scene = scene
        self.K = np.asarray(K, float)
        self.W, self.H = int(width), int(height)
        self.max_distance = float(max_distance)
        self.ss = int(supersample)
        if self.ss < 1:
            raise ValueError(f'supersample must be >= 1, got {supersample}')
        self.noise = Noise(seed)
        Kinv = np.linalg.inv(self.K)
        v, u = np.mgrid[0:self.H, 0:self.W].astype(np.float64)
        pix = np.stack([u, v, np.ones_like(u)], axis=-1)
        self.rays_c = (pix @ Kinv.T).astype(np.float32)          # (H,W,3) pixel centres, z = 1
        self.pixel_angle = 1.0 / np.sqrt(self.K[0, 0] * self.K[1, 1])

    # ---------------------------------------------------------------- visibility / culling
    def _screen_rects(self, T_wc):
        """Pixel rectangles (u0,u1,v0,v1), end-exclusive, of every primitive's clipped bounding
        box; None for primitives that cannot be seen."""
        sc = self.scene
        n = len(sc.corners)
        if n == 0:
            return []
        R, t = T_wc[:3, :3], T_wc[:3, 3]
        # cheap distance culling first
        dist = np.linalg.norm(sc.obj_centre - t, axis=1) - sc.obj_radius
        cand = np.nonzero(dist < self.max_distance)[0]
        pc = (sc.corners[cand] - t) @ R                              # (m,8,3) camera frame
        near = 0.02
        rects = [None] * n
        K = self.K
        for j, i in enumerate(cand):
            p = pc[j]
            front = p[:, 2] > near
            if not front.any():
                continue
            pts = p[front]
            if not front.all():  # clip edges crossing the near plane
                a, b = p[_BOX_EDGES[:, 0]], p[_BOX_EDGES[:, 1]]
                cross = (a[:, 2] > near) != (b[:, 2] > near)
                if cross.any():
                    a, b = a[cross], b[cross]
                    s = (near - a[:, 2]) / (b[:, 2] - a[:, 2])
                    pts = np.concatenate([pts, a + s[:, None] * (b - a)])
            u = K[0, 0] * pts[:, 0] / pts[:, 2] + K[0, 2]
            v = K[1, 1] * pts[:, 1] / pts[:, 2] + K[1, 2]
            u0 = max(0, int(np.floor(u.min())))
            u1 = min(self.W, int(np.ceil(u.max())) + 1)
            v0 = max(0, int(np.floor(v.min())))
            v1 = min(self.H, int(np.ceil(v.max())) + 1)
            if u1 > u0 and v1 > v0:
                rects[i] = (u0, u1, v0, v1)
        return rects

    # ---------------------------------------------------------------- intersections
    @staticmethod
    def _hit_box(o, d, c, h, yaw):
        """Ray/oriented-box: o (3,), d (n,3) -> t (n,) (inf = miss)."""
        cs, sn = np.cos(yaw), np.sin(yaw)
        ol = o - c
        olx, oly, olz = cs * ol[0] + sn * ol[1], -sn * ol[0] + cs * ol[1], ol[2]
        dx = cs * d[:, 0] + sn * d[:, 1]
        dy = -sn * d[:, 0] + cs * d[:, 1]
        dz = d[:, 2]
        with np.errstate(divide='ignore', invalid='ignore'):
            tmin = np.full(len(d), -np.inf, np.float32)
            tmax = np.full(len(d), np.inf, np.float32)
            for oc, dc, hc in ((olx, dx, h[0]), (oly, dy, h[1]), (olz, dz, h[2])):
                inv = 1.0 / np.where(np.abs(dc) < 1e-12, 1e-12, dc)
                t1 = (-hc - oc) * inv
                t2 = (hc - oc) * inv
                tmin = np.maximum(tmin, np.minimum(t1, t2))
                tmax = np.minimum(tmax, np.maximum(t1, t2))
        hit = (tmax >= tmin) & (tmin > 1e-4)
        return np.where(hit, tmin, np.inf)

    @staticmethod
    def _hit_cyl(o, d, c, r, z):
        ox, oy = o[0] - c[0], o[1] - c[1]
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = 2 * (ox * d[:, 0] + oy * d[:, 1])
        cc = ox * ox + oy * oy - r * r
        disc = b * b - 4 * a * cc
        with np.errstate(divide='ignore', invalid='ignore'):
            t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * np.maximum(a, 1e-12))
            zz = o[2] + t * d[:, 2]
            side = (disc > 0) & (t > 1e-4) & (zz >= z[0]) & (zz <= z[1])
            tt = np.where(side, t, np.inf)
            # top cap
            tc = (z[1] - o[2]) / np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
            px = ox + tc * d[:, 0]
            py = oy + tc * d[:, 1]
            cap = (tc > 1e-4) & (px * px + py * py <= r * r)
        return np.minimum(tt, np.where(cap, tc, np.inf))

    @staticmethod
    def _hit_sphere(o, d, c, r):
        oc = o - c
        a = np.einsum('ij,ij->i', d, d)
        b = 2 * (d @ oc)
        cc = oc @ oc - r * r
        disc = b * b - 4 * a * cc
        with np.errstate(invalid='ignore'):
            t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        return np.where((disc > 0) & (t > 1e-4), t, np.inf)

    # ---------------------------------------------------------------- main entry
    def render(self, T_wc: np.ndarray, s_hint: float = 0.0, return_labels: bool = False):
        """Render from camera pose T_wc (camera optical frame -> world, 4x4).

        Returns (rgb uint8 HxWx3, depth float32 HxW z-depth metres, +inf for sky). Depth is always
        the exact value at the pixel centre. With supersampling, pixels on a geometric edge
        (another object, a depth jump or a crease in a neighbouring pixel) get the mean colour of
        ss x ss sub-samples (adaptive anti-aliasing; textures are filtered analytically).
        With ``return_labels`` also the primitive seen through each pixel centre: kind (HxW, a
        ``KIND_*``) and its index among the primitives of that kind (HxW int64, -1 for
        ground/ceiling/sky)."""
        R = T_wc[:3, :3].astype(np.float64)
        o = T_wc[:3, 3].astype(np.float64)
        rects = self._screen_rects(T_wc)
        d = self.rays_c @ R.T.astype(np.float32)                    # (H,W,3) world directions
        t, kind, obj = self._cast(o, d, rects, 1)
        col, normal = self._shade(o, d, t, kind, obj, s_hint, self.pixel_angle)
        if self.ss > 1:
            edge = self._edges(t, kind, obj, normal)
            if edge.any():
                col[edge] = self._supersample(o, R, edge, rects, s_hint)
        if return_labels:
            return _to_uint8(col), t.astype(np.float32), kind, obj
        return _to_uint8(col), t.astype(np.float32)

    @staticmethod
    def _edges(t, kind, obj, normal):
        """Pixels whose 4-neighbourhood crosses a silhouette, depth jump or crease."""
        key = kind.astype(np.int64) * 1_000_003 + obj
        lt = np.log(np.where(np.isfinite(t), np.maximum(t, 1e-3), 1e6))
        e = np.zeros(t.shape, bool)
        for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                     ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
            diff = ((key[a] != key[b]) | (np.abs(lt[a] - lt[b]) > 0.05)
                    | (np.einsum('...k,...k->...', normal[a], normal[b]) < 0.95))
            e[a] |= diff
            e[b] |= diff
        return e

    def _supersample(self, o, R, edge, rects, s_hint):
        ss = self.ss
        vv, uu = np.nonzero(edge)
        off = (np.arange(ss) + 0.5) / ss - 0.5
        du, dv = np.meshgrid(off, off, indexing='xy')
        pu = (uu[:, None] + du.reshape(1, -1)).reshape(-1)
        pv = (vv[:, None] + dv.reshape(1, -1)).reshape(-1)
        Kinv = np.linalg.inv(self.K)
        rays = np.stack([pu, pv, np.ones_like(pu)], 1) @ Kinv.T
        d = (rays @ R.T).astype(np.float32)
        pix_u = np.repeat(uu, ss * ss)
        pix_v = np.repeat(vv, ss * ss)
        t, kind, obj = self._cast_list(o, d, pix_u, pix_v, rects)
        col, _ = self._shade(o, d, t, kind, obj, s_hint, self.pixel_angle / ss)
        return col.reshape(-1, ss * ss, 3).mean(axis=1)

    def _cast_list(self, o, d, pu, pv, rects):
        """Like _cast for a flat list of rays d (n,3) belonging to pixels (pu, pv)."""
        sc = self.scene
        dz = d[:, 2]
        with np.errstate(divide='ignore', invalid='ignore'):
            tbuf = np.where(dz < -1e-9, -o[2] / dz, np.inf).astype(np.float32)
        kind = np.where(np.isfinite(tbuf), KIND_GROUND, KIND_NONE)
        obj = np.full(tbuf.shape, -1, np.int64)
        if sc.ceiling is not None:
            with np.errstate(divide='ignore', invalid='ignore'):
                tcl = np.where(dz > 1e-9, (sc.ceiling - o[2]) / dz, np.inf).astype(np.float32)
            better = tcl < tbuf
            tbuf = np.where(better, tcl, tbuf)
            kind = np.where(better, KIND_CEILING, kind)
        for i, rect in enumerate(rects):
            if rect is None:
                continue
            u0, u1, v0, v1 = rect
            sel = np.nonzero((pu >= u0) & (pu < u1) & (pv >= v0) & (pv < v1))[0]
            if len(sel) == 0:
                continue
            dd = d[sel]
            k, j = sc.obj_kind[i], sc.obj_index[i]
            if k == KIND_BOX:
                t = self._hit_box(o, dd, sc.box_c[j], sc.box_h[j], sc.box_yaw[j])
            elif k == KIND_CYL:
                t = self._hit_cyl(o, dd, sc.cyl_c[j], sc.cyl_r[j], sc.cyl_z[j])
            else:
                t = self._hit_sphere(o, dd, sc.sph_c[j], sc.sph_r[j])
            better = t < tbuf[sel]
            if better.any():
                idx = sel[better]
                tbuf[idx] = t[better]
                kind[idx] = k
                obj[idx] = j
        return tbuf, kind, obj

    def _cast(self, o, d, rects, ss):
        """Nearest hit per ray: (t (h,w) float32, kind (h,w), object index (h,w))."""
        sc = self.scene
        dz = d[..., 2]
        with np.errstate(divide='ignore', invalid='ignore'):
            tbuf = np.where(dz < -1e-9, -o[2] / dz, np.inf).astype(np.float32)
        kind = np.where(np.isfinite(tbuf), KIND_GROUND, KIND_NONE)
        obj = np.full(tbuf.shape, -1, np.int64)
        if sc.ceiling is not None:
            with np.errstate(divide='ignore', invalid='ignore'):
                tcl = np.where(dz > 1e-9, (sc.ceiling - o[2]) / dz, np.inf).astype(np.float32)
            better = tcl < tbuf
            tbuf = np.where(better, tcl, tbuf)
            kind = np.where(better, KIND_CEILING, kind)
        # objects, each only over its screen rectangle
        for i, rect in enumerate(rects):
            if rect is None:
                continue
            u0, u1, v0, v1 = (r * ss for r in rect)
            dd = d[v0:v1, u0:u1].reshape(-1, 3)
            k, j = sc.obj_kind[i], sc.obj_index[i]
            if k == KIND_BOX:
                t = self._hit_box(o, dd, sc.box_c[j], sc.box_h[j], sc.box_yaw[j])
            elif k == KIND_CYL:
                t = self._hit_cyl(o, dd, sc.cyl_c[j], sc.cyl_r[j], sc.cyl_z[j])
            else:
                t = self._hit_sphere(o, dd, sc.sph_c[j], sc.sph_r[j])
            t = t.reshape(v1 - v0, u1 - u0)
            tb = tbuf[v0:v1, u0:u1]
            better = t < tb
            if better.any():
                tbuf[v0:v1, u0:u1] = np.where(better, t, tb)
                kind[v0:v1, u0:u1] = np.where(better, k, kind[v0:v1, u0:u1])
                obj[v0:v1, u0:u1] = np.where(better, j, obj[v0:v1, u0:u1])
        return tbuf, kind, obj

    # ---------------------------------------------------------------- shading
    def _shade(self, o, d, t, kind, obj, s_hint, pixel_angle):
        """Linear colour (...,3) float32 and unit surface normal (...,3) of every ray (any
        leading shape: an image (h,w) or a flat list (n,))."""
        sc = self.scene
        col = np.zeros(t.shape + (3,), np.float32)
        normal = np.zeros(t.shape + (3,), np.float32)
        hitm = kind != KIND_NONE
        dn = d / np.linalg.norm(d, axis=-1, keepdims=True)
        # sky
        sky = ~hitm
        if sky.any():
            col[sky] = self._sky(dn[sky])
        if not hitm.any():
            return col, normal
        ts = t[hitm]
        ds_ = d[hitm]
        p = o[None, :].astype(np.float32) + ts[:, None] * ds_
        kh = kind[hitm]
        oh = obj[hitm]
        n = np.zeros_like(p)
        albedo = np.zeros_like(p)
        # footprint of one pixel on the surface (metres), incidence-corrected (geometric mean)
        base_fp = ts * np.float32(pixel_angle)

        dnh = dn[hitm]

        def footprint(sel, normal):
            cosi = np.abs(np.einsum('ij,ij->i', normal, dnh[sel]))
            return base_fp[sel] / np.sqrt(np.maximum(cosi, 0.05))

        ts_ = sc.texture_scale
        nz = self.noise
        # ---- ground
        g = kh == KIND_GROUND
        if g.any():
            n[g] = (0, 0, 1)
            fp = footprint(g, n[g])
            albedo[g] = self._ground(p[g], fp, s_hint)
        c = kh == KIND_CEILING
        if c.any():
            n[c] = (0, 0, -1)
            fp = footprint(c, n[c])
            pc = p[c]
            tex = nz.fbm(pc[:, 0], pc[:, 1], 2.0 * ts_, fp, octaves=4, slot=9)
            panels = 1 - 0.35 * (_lines(pc[:, 0], 1.2 * ts_, 0.04 * ts_, fp)
                                 + _lines(pc[:, 1], 0.6 * ts_, 0.04 * ts_, fp)).clip(0, 1)
            albedo[c] = sc.ceiling_color[None] * ((0.75 + 0.5 * tex) * panels)[:, None]
        # ---- boxes
        b = kh == KIND_BOX
        if b.any():
            j = oh[b]
            pb = p[b]
            yaw = sc.box_yaw[j]
            cs, sn = np.cos(yaw), np.sin(yaw)
            q = pb - sc.box_c[j]
            lx = cs * q[:, 0] + sn * q[:, 1]
            ly = -sn * q[:, 0] + cs * q[:, 1]
            lz = q[:, 2]
            hh = sc.box_h[j]
            rel = np.abs(np.stack([lx, ly, lz], 1)) / hh
            ax = np.argmax(rel, axis=1)
            sgn = np.sign(np.choose(ax, [lx, ly, lz]))
            nl = np.zeros_like(pb)
            nl[np.arange(len(ax)), ax] = sgn
            nw = np.stack([cs * nl[:, 0] - sn * nl[:, 1], sn * nl[:, 0] + cs * nl[:, 1], nl[:, 2]], 1)
            n[b] = nw
            fp = footprint(b, nw.astype(np.float32))
            # face coordinates: u along the face, v up (world z for walls)
            zw = pb[:, 2]
            u = np.where(ax == 0, ly, lx)
            v = np.where(ax == 2, ly, zw)
            albedo[b] = self._box_material(sc.box_mat[j], sc.box_col[j], sc.box_par[j], u, v, zw,
                                           ax == 2, fp)
        # ---- cylinders
        cy = kh == KIND_CYL
        if cy.any():
            j = oh[cy]
            pcy = p[cy]
            qx = pcy[:, 0] - sc.cyl_c[j, 0]
            qy = pcy[:, 1] - sc.cyl_c[j, 1]
            r = sc.cyl_r[j]
            top = np.abs(pcy[:, 2] - sc.cyl_z[j, 1]) < 1e-3 * np.maximum(1.0, r)
            nn = np.stack([qx / r, qy / r, np.zeros_like(qx)], 1)
            nn[top] = (0, 0, 1)
            n[cy] = nn
            fp = footprint(cy, nn.astype(np.float32))
            ang = np.arctan2(qy, qx)
            u = ang * r
            v = pcy[:, 2]
            mat = sc.cyl_mat[j]
            colr = sc.cyl_col[j].astype(np.float32)
            a = np.empty((len(j), 3), np.float32)
            m = mat == MAT_BARK
            if m.any():
                tex = nz.fbm(u[m] * 4, v[m] * 0.7, 0.5 * ts_, fp[m], octaves=4, slot=5)
                a[m] = colr[m] * (0.55 + 0.9 * tex)[:, None]
            m = ~m
            if m.any():
                band = _lines(v[m], 1.5 * ts_, 0.25 * ts_, fp[m])
                tex = nz.fbm(u[m], v[m], 0.8 * ts_, fp[m], octaves=4, slot=6)
                a[m] = colr[m] * ((0.8 + 0.4 * tex) * (1 - 0.45 * band))[:, None]
            albedo[cy] = a
        # ---- spheres (foliage)
        sp = kh == KIND_SPHERE
        if sp.any():
            j = oh[sp]
            ps = p[sp]
            q = (ps - sc.sph_c[j]) / sc.sph_r[j][:, None]
            n[sp] = q
            fp = footprint(sp, q.astype(np.float32))
            tex = (nz.fbm(ps[:, 0] + ps[:, 2], ps[:, 1], 0.6 * ts_, fp, octaves=5, slot=7)
                   + nz.fbm(ps[:, 1] - ps[:, 2], ps[:, 0], 0.6 * ts_, fp, octaves=5, slot=8)) * 0.5
            albedo[sp] = sc.sph_col[j] * np.clip(1.0 + 3.0 * (tex - 0.5), 0.2, 2.0)[:, None]

        # ---- lighting
        ndl = np.clip(n @ sc.sun_dir.astype(np.float32), 0.0, None)
        if sc.indoor:
            amb = np.full(len(n), sc.ambient + 0.25, np.float32)
            light = amb[:, None] + 0.6 * ndl[:, None] * sc.sun_color[None]
        else:
            amb = sc.ambient * (0.75 + 0.25 * n[:, 2])
            light = amb[:, None] * np.array([0.85, 0.92, 1.05], np.float32) \
                + ndl[:, None] * sc.sun_color[None].astype(np.float32)
        # ambient occlusion near the ground on vertical surfaces
        vert = np.abs(n[:, 2]) < 0.5
        ao = np.where(vert, 1.0 - 0.35 * np.exp(-np.maximum(p[:, 2], 0) / 0.5), 1.0)
        shaded = albedo * light * ao[:, None]
        # distance haze towards the horizon colour
        dist = ts * np.linalg.norm(ds_, axis=1)
        hz = (1.0 - np.exp(-dist / sc.haze_distance))[:, None]
        shaded = shaded * (1 - hz) + hz * self._horizon()[None]
        col[hitm] = shaded
        normal[hitm] = n
        return col, normal

    def _horizon(self):
        if self.scene.indoor:
            return np.array([0.45, 0.45, 0.45], np.float32)
        return np.array([0.78, 0.82, 0.88], np.float32)

    def _sky(self, dn):
        el = np.clip(dn[:, 2], -1, 1)
        zen = np.array([0.32, 0.48, 0.80], np.float32)
        c = self._horizon()[None] * (1 - np.clip(el * 2.5, 0, 1)[:, None]) \
            + zen[None] * np.clip(el * 2.5, 0, 1)[:, None]
        # clouds on a plane at infinity (a function of direction only: consistent under motion)
        up = np.maximum(el, 0.05)
        cx, cy = dn[:, 0] / up, dn[:, 1] / up
        cl = self.noise.fbm(cx * 4, cy * 4, 3.0, np.full(len(dn), 0.01, np.float32), octaves=4, slot=11)
        cover = np.clip((cl - 0.45) * 3, 0, 1) * np.clip(el * 4, 0, 1)
        c = c * (1 - cover[:, None]) + cover[:, None] * np.array([0.95, 0.95, 0.97], np.float32)
        sun = np.clip(dn @ self.scene.sun_dir.astype(np.float32), 0, 1) ** 64
        return c + sun[:, None] * np.array([0.6, 0.5, 0.3], np.float32)

    def _ground(self, p, fp, s_hint):
        sc = self.scene
        road = sc.road
        ts_ = sc.texture_scale
        nz = self.noise
        s, lat = road.coords(p[:, :2].astype(np.float64), s_hint, self.max_distance + 20.0)
        s = s.astype(np.float32)
        lat = lat.astype(np.float32)
        alat = np.abs(lat)
        hw, sw = road.half_width, road.sidewalk
        x, y = p[:, 0], p[:, 1]
        # asphalt: grainy multi-scale noise + patches
        grain = nz.fbm(x, y, 0.4 * ts_, fp, octaves=5, slot=0)
        patches = nz.fbm(x, y, 6.0 * ts_, fp, octaves=3, slot=1)
        mid = nz.fbm(x, y, 1.6 * ts_, fp, octaves=3, slot=5)
        asphalt = sc.ground_colors[0][None] * (1.0 + 1.8 * (grain - 0.5) + 1.2 * (mid - 0.5)
                                               + 1.2 * (patches - 0.5))[:, None]
        # markings: dashed centre line + solid edge lines
        dash = _box_pulse((s / ts_) % (2 * road.lane_dash), 0.0, road.lane_dash, fp / ts_)
        centre = _box_pulse(lat, -0.07 * ts_, 0.07 * ts_, fp) * dash
        edge = _box_pulse(alat, hw - 0.45 * ts_, hw - 0.3 * ts_, fp)
        paint = np.clip(centre + edge, 0, 1)[:, None] * float(sc.markings)
        asphalt = asphalt * (1 - paint) + paint * np.array([0.85, 0.85, 0.80], np.float32)
        # sidewalk: tiles in road coordinates
        tile = nz.fbm(x, y, 0.3 * ts_, fp, octaves=4, slot=2)
        joints = np.clip(_lines(s, 0.6 * ts_, 0.03 * ts_, fp) + _lines(lat, 0.6 * ts_, 0.03 * ts_, fp), 0, 1)
        tint = nz.value(np.floor(s / (0.6 * ts_)) * 0.37 + 3.1, np.floor(lat / (0.6 * ts_)) * 0.37 + 7.7)
        side = sc.ground_colors[1][None] * ((0.8 + 0.35 * tile + 0.15 * (tint - 0.5)) * (1 - 0.4 * joints))[:, None]
        # kerb: a light band at the road edge
        kerb = _box_pulse(alat, hw, hw + 0.25 * ts_, fp)[:, None] * float(hw > 0)
        side = side * (1 - kerb) + kerb * np.array([0.7, 0.7, 0.68], np.float32)
        # verge: grass / dirt
        g1 = nz.fbm(x, y, 0.5 * ts_, fp, octaves=5, slot=3)
        g2 = nz.fbm(x, y, 8.0 * ts_, fp, octaves=3, slot=4)
        dirt = np.array([0.40, 0.33, 0.24], np.float32)
        mixw = np.clip((g2 - 0.4) * 3, 0, 1)[:, None]
        verge = (sc.ground_colors[2][None] * (1 - mixw) + dirt[None] * mixw) * (0.55 + 0.8 * g1)[:, None]
        w_road = _box_pulse(alat, -1.0, hw, fp)[:, None] * float(hw > 0)
        w_side = _box_pulse(alat, hw, hw + sw, fp)[:, None]
        w_verge = np.clip(1 - w_road - w_side, 0, 1)
        return asphalt * w_road + side * w_side + verge * w_verge

    def _box_material(self, mat, colr, par, u, v, z, top, fp):
        nz = self.noise
        ts_ = self.scene.texture_scale
        out = np.empty((len(mat), 3), np.float32)
        colr = colr.astype(np.float32)
        for m in np.unique(mat):
            s = mat == m
            uu, vv, zz, f, cc, pp = u[s], v[s], z[s], fp[s], colr[s], par[s]
            if m in (MAT_FACADE, MAT_BRICK):
                if m == MAT_BRICK:
                    row = np.floor(vv / (0.075 * ts_))
                    bu = uu + 0.5 * 0.25 * ts_ * (row % 2)
                    mortar = np.clip(_lines(vv, 0.075 * ts_, 0.012 * ts_, f)
                                     + _lines(bu, 0.25 * ts_, 0.012 * ts_, f), 0, 1)
                    per = nz.value(np.floor(bu / (0.25 * ts_)) * 0.71 + pp[:, 2], row * 0.53 + pp[:, 3])
                    base = cc * (0.75 + 0.5 * per[:, None] * 0.6) * (1 - 0.35 * mortar)[:, None]
                else:
                    plaster = nz.fbm(uu + pp[:, 2], vv, 1.5 * ts_, f, octaves=6, slot=12)
                    stains = nz.fbm(uu * 0.5 + pp[:, 3], vv * 0.25, 2.0 * ts_, f, octaves=3, slot=3)
                    base = cc * (1.0 + 1.6 * (plaster - 0.5) + 1.2 * (stains - 0.5))[:, None]
                # windows: grid with per-building spacing; none on roofs
                pu, pv = pp[:, 0], pp[:, 1]
                win = _rect_grid(uu, zz, pu, pv, 0.45 * pu, 0.5 * pv, 0.3 * pu, 0.3 * pv, f)
                win = np.where(top[s], 0.0, win)
                glass = nz.fbm(uu * 0.5, zz, 2.0, f, octaves=2, slot=13)
                glass_col = np.array([0.10, 0.13, 0.17], np.float32)[None] * (0.6 + 1.2 * glass)[:, None]
                frame = _rect_grid(uu, zz, pu, pv, 0.53 * pu, 0.58 * pv, 0.26 * pu, 0.26 * pv, f) - win
                cornice = _lines(zz, pv, 0.18, f)
                base = base * (1 - 0.3 * np.clip(frame, 0, 1) - 0.25 * cornice)[:, None]
                res = base * (1 - win[:, None]) + glass_col * win[:, None]
                roof = nz.fbm(uu, vv, 1.0 * ts_, f, octaves=4, slot=14)
                res = np.where(top[s][:, None], np.array([0.35, 0.33, 0.32], np.float32)[None]
                               * (0.6 + 0.8 * roof)[:, None], res)
            elif m == MAT_CRATE:
                planks = _lines(vv, 0.2 * ts_, 0.015 * ts_, f)
                grain = nz.fbm(uu * 0.25, vv * 4, 0.3 * ts_, f, octaves=4, slot=15)
                res = cc * ((0.6 + 0.8 * grain) * (1 - 0.5 * planks))[:, None]
            elif m == MAT_CAR:
                paint = nz.fbm(uu, vv, 0.7 * ts_, f, octaves=3, slot=10)
                trim = _box_pulse(zz, pp[:, 0], pp[:, 0] + 0.08, f)
                res = cc * (0.85 + 0.3 * paint)[:, None] * (1 - 0.6 * trim)[:, None]
            elif m == MAT_GLASS_CABIN:
                refl = nz.fbm(uu, vv, 1.0, f, octaves=3, slot=13)
                pillar = _lines(uu, 1.1, 0.12, f)
                res = (np.array([0.08, 0.1, 0.13], np.float32)[None] * (0.7 + 1.0 * refl)[:, None]
                       * (1 - pillar[:, None]) + pillar[:, None] * cc)
            elif m == MAT_TILE_WALL:
                tile = nz.fbm(uu, vv, 0.25 * ts_, f, octaves=4, slot=2)
                joints = np.clip(_lines(uu, 0.3 * ts_, 0.01 * ts_, f) + _lines(vv, 0.3 * ts_, 0.01 * ts_, f), 0, 1)
                dado = _box_pulse(vv, -1.0, 1.0, f)
                blotch = nz.fbm(uu, vv, 3.0 * ts_, f, octaves=3, slot=1)
                res = cc * ((0.75 + 0.35 * tile + 0.4 * (blotch - 0.5)) * (1 - 0.3 * joints) * (1 - 0.25 * dado))[:, None]
            else:  # concrete / generic
                t1 = nz.fbm(uu + pp[:, 2], vv, 2.0 * ts_, f, octaves=5, slot=14)
                seams = _lines(uu, 2.5 * ts_, 0.03 * ts_, f)
                t2 = nz.fbm(uu * 0.3 + pp[:, 3], vv, 0.8 * ts_, f, octaves=4, slot=6)
                res = cc * ((1.0 + 1.5 * (t1 - 0.5) + 0.8 * (t2 - 0.5)) * (1 - 0.3 * seams))[:, None]
            out[s] = res
        return out


def _to_uint8(col):
    """Linear colour -> 8-bit sRGB-like (gamma 2.2)."""
    return (np.clip(col, 0.0, 1.0) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)
