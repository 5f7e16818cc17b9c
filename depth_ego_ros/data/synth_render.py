"""The synthetic world's renderer: one frame of colour, exact depth and labels from a camera pose.

Rendering one frame (:meth:`Renderer.render`):

1. one ray per pixel centre (u, v) = (column, row), direction ``R_wc @ K^-1 (u, v, 1)`` -- the
   ray parameter ``t`` then *is* the z-depth along the optical axis; the nearest hit per ray
   comes from the ray caster (:mod:`.synth_raycast`);
2. surface normals and surface coordinates fixed to the object, so texture moves exactly with
   the geometry; materials from :mod:`.synth_textures` (filtered multi-octave value noise and
   anti-aliased patterns: octaves and lines finer than the pixel footprint fade to their mean,
   which keeps textures free of flicker between frames);
3. Lambertian sun + sky ambient shading, a little ambient occlusion near the ground, distance
   haze; rays that hit nothing see the sky (depth +inf);
4. pixels on a silhouette, depth jump or crease are supersampled (adaptive anti-aliasing).

What a scene is made of (``Scene``, ``Road``, material and kind ids) lives in
:mod:`.synth_scene`. Everything is deterministic: the noise tables come from the world seed.
"""
from __future__ import annotations

import numpy as np

from .synth_raycast import cast_image, cast_rays, screen_rects
from .synth_scene import KIND_BOX, KIND_CEILING, KIND_CYL, KIND_GROUND, KIND_NONE, KIND_SPHERE, Scene
from .synth_textures import (
    Noise,
    box_albedo,
    ceiling_albedo,
    cylinder_albedo,
    foliage_albedo,
    ground_albedo,
    horizon_colour,
    sky_colour,
)


class Renderer:
    """Ray caster + shading for one image size and intrinsics."""

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
        rects = screen_rects(self.scene, self.K, self.W, self.H, self.max_distance, T_wc)
        d = self.rays_c @ R.T.astype(np.float32)                    # (H,W,3) world directions
        t, kind, obj = cast_image(self.scene, o, d, rects, 1)
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
        t, kind, obj = cast_rays(self.scene, o, d, pix_u, pix_v, rects)
        col, _ = self._shade(o, d, t, kind, obj, s_hint, self.pixel_angle / ss)
        return col.reshape(-1, ss * ss, 3).mean(axis=1)

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
            col[sky] = sky_colour(sc, self.noise, dn[sky])
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
            albedo[g] = ground_albedo(sc, nz, p[g], fp, s_hint, self.max_distance + 20.0)
        c = kh == KIND_CEILING
        if c.any():
            n[c] = (0, 0, -1)
            fp = footprint(c, n[c])
            albedo[c] = ceiling_albedo(sc, nz, p[c], fp)
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
            albedo[b] = box_albedo(nz, ts_, sc.box_mat[j], sc.box_col[j], sc.box_par[j], u, v, zw,
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
            albedo[cy] = cylinder_albedo(nz, ts_, sc.cyl_mat[j], sc.cyl_col[j].astype(np.float32),
                                         u, v, fp)
        # ---- spheres (foliage)
        sp = kh == KIND_SPHERE
        if sp.any():
            j = oh[sp]
            ps = p[sp]
            q = (ps - sc.sph_c[j]) / sc.sph_r[j][:, None]
            n[sp] = q
            fp = footprint(sp, q.astype(np.float32))
            albedo[sp] = foliage_albedo(nz, ts_, ps, sc.sph_col[j], fp)
        col[hitm] = self._light(p, n, albedo, ts, ds_)
        normal[hitm] = n
        return col, normal

    def _light(self, p, n, albedo, ts, ds_):
        """Shaded colour of surface points p with normals n and albedo: sun + ambient, ambient
        occlusion near the ground, haze with the distance along the rays (t ts, directions ds_)."""
        sc = self.scene
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
        return shaded * (1 - hz) + hz * horizon_colour(sc)[None]


def _to_uint8(col):
    """Linear colour -> 8-bit sRGB-like (gamma 2.2)."""
    return (np.clip(col, 0.0, 1.0) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


__all__ = ['Renderer']
