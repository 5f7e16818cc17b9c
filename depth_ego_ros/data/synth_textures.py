"""Procedural textures of the synthetic world: filtered value noise, anti-aliased patterns and
the albedo of each material (ground, ceiling, boxes, cylinders, foliage) and of the sky.

Textures are functions of surface coordinates fixed to the object, so they move exactly with the
geometry. Every pattern takes the pixel's footprint on the surface: octaves and lines finer than
it fade to their mean (no aliasing shimmer between frames). Deterministic: the noise table comes
from the world seed.
"""
from __future__ import annotations

import numpy as np

from .synth_scene import (
    MAT_BARK,
    MAT_BRICK,
    MAT_CAR,
    MAT_CRATE,
    MAT_FACADE,
    MAT_GLASS_CABIN,
    MAT_TILE_WALL,
)

_NOISE_SIZE = 512


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
# materials
# ----------------------------------------------------------------------------------------------
def ground_albedo(sc, nz: Noise, p, fp, s_hint, window):
    """Albedo of ground points p (n,3): asphalt with markings, kerb and tiled sidewalk, verge
    (road coordinates searched within +-window of s_hint along the road)."""
    road = sc.road
    ts_ = sc.texture_scale
    s, lat = road.coords(p[:, :2].astype(np.float64), s_hint, window)
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


def ceiling_albedo(sc, nz: Noise, pc, fp):
    """Albedo of ceiling points pc (n,3): panels with a noise texture."""
    ts_ = sc.texture_scale
    tex = nz.fbm(pc[:, 0], pc[:, 1], 2.0 * ts_, fp, octaves=4, slot=9)
    panels = 1 - 0.35 * (_lines(pc[:, 0], 1.2 * ts_, 0.04 * ts_, fp)
                         + _lines(pc[:, 1], 0.6 * ts_, 0.04 * ts_, fp)).clip(0, 1)
    return sc.ceiling_color[None] * ((0.75 + 0.5 * tex) * panels)[:, None]


def cylinder_albedo(nz: Noise, ts_, mat, colr, u, v, fp):
    """Albedo of cylinder surfaces: bark, else banded metal (u around, v up)."""
    a = np.empty((len(mat), 3), np.float32)
    m = mat == MAT_BARK
    if m.any():
        tex = nz.fbm(u[m] * 4, v[m] * 0.7, 0.5 * ts_, fp[m], octaves=4, slot=5)
        a[m] = colr[m] * (0.55 + 0.9 * tex)[:, None]
    m = ~m
    if m.any():
        band = _lines(v[m], 1.5 * ts_, 0.25 * ts_, fp[m])
        tex = nz.fbm(u[m], v[m], 0.8 * ts_, fp[m], octaves=4, slot=6)
        a[m] = colr[m] * ((0.8 + 0.4 * tex) * (1 - 0.45 * band))[:, None]
    return a


def foliage_albedo(nz: Noise, ts_, ps, col, fp):
    """Albedo of sphere (tree crown) points ps (n,3) of colour col (n,3)."""
    tex = (nz.fbm(ps[:, 0] + ps[:, 2], ps[:, 1], 0.6 * ts_, fp, octaves=5, slot=7)
           + nz.fbm(ps[:, 1] - ps[:, 2], ps[:, 0], 0.6 * ts_, fp, octaves=5, slot=8)) * 0.5
    return col * np.clip(1.0 + 3.0 * (tex - 0.5), 0.2, 2.0)[:, None]


def box_albedo(nz: Noise, ts_, mat, colr, par, u, v, z, top, fp):
    """Albedo of box faces by material (facade, brick, crate, car, glass cabin, tiles, concrete):
    u along the face, v up on walls / across on tops, z height, ``top`` on roof faces, ``par``
    the box's texture parameters (window grid spacing, noise offsets)."""
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


def horizon_colour(scene):
    """Colour of the haze and of the sky at the horizon."""
    if scene.indoor:
        return np.array([0.45, 0.45, 0.45], np.float32)
    return np.array([0.78, 0.82, 0.88], np.float32)


def sky_colour(scene, noise: Noise, dn):
    """Colour of the sky in the unit directions dn (n,3): gradient, clouds, sun glow."""
    el = np.clip(dn[:, 2], -1, 1)
    zen = np.array([0.32, 0.48, 0.80], np.float32)
    c = horizon_colour(scene)[None] * (1 - np.clip(el * 2.5, 0, 1)[:, None]) \
        + zen[None] * np.clip(el * 2.5, 0, 1)[:, None]
    # clouds on a plane at infinity (a function of direction only: consistent under motion)
    up = np.maximum(el, 0.05)
    cx, cy = dn[:, 0] / up, dn[:, 1] / up
    cl = noise.fbm(cx * 4, cy * 4, 3.0, np.full(len(dn), 0.01, np.float32), octaves=4, slot=11)
    cover = np.clip((cl - 0.45) * 3, 0, 1) * np.clip(el * 4, 0, 1)
    c = c * (1 - cover[:, None]) + cover[:, None] * np.array([0.95, 0.95, 0.97], np.float32)
    sun = np.clip(dn @ scene.sun_dir.astype(np.float32), 0, 1) ** 64
    return c + sun[:, None] * np.array([0.6, 0.5, 0.3], np.float32)


__all__ = ['Noise', 'box_albedo', 'ceiling_albedo', 'cylinder_albedo', 'foliage_albedo',
           'ground_albedo', 'horizon_colour', 'sky_colour']
