"""Ray casting of the synthetic world: visibility without a rasteriser library.

One ray per pixel (or sub-pixel) from the camera centre ``o``; the ray parameter ``t`` of a
direction ``R_wc @ K^-1 (u, v, 1)`` is the z-depth along the optical axis. The planes (ground
``z = 0``, the ceiling) are intersected for all rays at once; each other primitive only with the
rays inside the screen rectangle of its near-plane-clipped bounding box (:func:`screen_rects`),
and a z-buffer keeps the nearest hit -- like a rasteriser, so the cost grows with covered
pixels, not with pixels x primitives. A hit is (t, kind, index among the primitives of that
kind): ``KIND_*`` of :mod:`.synth_scene`, index -1 for ground, ceiling and sky.
"""
from __future__ import annotations

import numpy as np

from .synth_scene import KIND_BOX, KIND_CEILING, KIND_CYL, KIND_GROUND, KIND_NONE, Scene

_BOX_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8)
                       if bin(a ^ b).count('1') == 1])  # 12 edges of the corner cube


def screen_rects(sc: Scene, K, width: int, height: int, max_distance: float, T_wc):
    """Pixel rectangles (u0,u1,v0,v1), end-exclusive, of every primitive's clipped bounding
    box; None for primitives that cannot be seen (or farther than max_distance)."""
    n = len(sc.corners)
    if n == 0:
        return []
    R, t = T_wc[:3, :3], T_wc[:3, 3]
    # cheap distance culling first
    dist = np.linalg.norm(sc.obj_centre - t, axis=1) - sc.obj_radius
    cand = np.nonzero(dist < max_distance)[0]
    pc = (sc.corners[cand] - t) @ R                              # (m,8,3) camera frame
    near = 0.02
    rects = [None] * n
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
        u1 = min(width, int(np.ceil(u.max())) + 1)
        v0 = max(0, int(np.floor(v.min())))
        v1 = min(height, int(np.ceil(v.max())) + 1)
        if u1 > u0 and v1 > v0:
            rects[i] = (u0, u1, v0, v1)
    return rects


def hit_box(o, d, c, h, yaw):
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


def hit_cyl(o, d, c, r, z):
    """Ray/vertical cylinder (radius r, z[0]..z[1], with a top cap) -> t (n,) (inf = miss)."""
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


def hit_sphere(o, d, c, r):
    """Ray/sphere -> t (n,) (inf = miss)."""
    oc = o - c
    a = np.einsum('ij,ij->i', d, d)
    b = 2 * (d @ oc)
    cc = oc @ oc - r * r
    disc = b * b - 4 * a * cc
    with np.errstate(invalid='ignore'):
        t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where((disc > 0) & (t > 1e-4), t, np.inf)


def _hit_object(sc: Scene, i: int, o, d):
    """(t (n,), kind, index) of rays d (n,3) against object i of the scene's object table."""
    k, j = sc.obj_kind[i], sc.obj_index[i]
    if k == KIND_BOX:
        t = hit_box(o, d, sc.box_c[j], sc.box_h[j], sc.box_yaw[j])
    elif k == KIND_CYL:
        t = hit_cyl(o, d, sc.cyl_c[j], sc.cyl_r[j], sc.cyl_z[j])
    else:
        t = hit_sphere(o, d, sc.sph_c[j], sc.sph_r[j])
    return t, k, j


def _hit_planes(sc: Scene, o, dz):
    """z-buffer initialised with the ground (and ceiling): (t, kind, index = -1) per ray."""
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
    return tbuf, kind, obj


def cast_image(sc: Scene, o, d, rects, ss):
    """Nearest hit per ray of an image of rays d (h,w,3) (``ss`` rays per pixel and axis):
    (t (h,w) float32, kind (h,w), object index (h,w))."""
    tbuf, kind, obj = _hit_planes(sc, o, d[..., 2])
    # objects, each only over its screen rectangle
    for i, rect in enumerate(rects):
        if rect is None:
            continue
        u0, u1, v0, v1 = (r * ss for r in rect)
        dd = d[v0:v1, u0:u1].reshape(-1, 3)
        t, k, j = _hit_object(sc, i, o, dd)
        t = t.reshape(v1 - v0, u1 - u0)
        tb = tbuf[v0:v1, u0:u1]
        better = t < tb
        if better.any():
            tbuf[v0:v1, u0:u1] = np.where(better, t, tb)
            kind[v0:v1, u0:u1] = np.where(better, k, kind[v0:v1, u0:u1])
            obj[v0:v1, u0:u1] = np.where(better, j, obj[v0:v1, u0:u1])
    return tbuf, kind, obj


def cast_rays(sc: Scene, o, d, pu, pv, rects):
    """Like :func:`cast_image` for a flat list of rays d (n,3) belonging to pixels (pu, pv)."""
    tbuf, kind, obj = _hit_planes(sc, o, d[:, 2])
    for i, rect in enumerate(rects):
        if rect is None:
            continue
        u0, u1, v0, v1 = rect
        sel = np.nonzero((pu >= u0) & (pu < u1) & (pv >= v0) & (pv < v1))[0]
        if len(sel) == 0:
            continue
        t, k, j = _hit_object(sc, i, o, d[sel])
        better = t < tbuf[sel]
        if better.any():
            idx = sel[better]
            tbuf[idx] = t[better]
            kind[idx] = k
            obj[idx] = j
    return tbuf, kind, obj


__all__ = ['cast_image', 'cast_rays', 'hit_box', 'hit_cyl', 'hit_sphere', 'screen_rects']
