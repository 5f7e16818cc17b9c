"""Independently moving objects of the synthetic world (``SynthConfig.moving_objects``).

Alternately a vehicle ahead in the camera's lane and an oncoming one in the other lane (carts in
the corridor). They are boxes of the same ray caster, added to the static scene per frame, so
depth stays exact; the ray caster's object index at each pixel centre gives the instance mask.
They draw from their own random generator, so a world without them is unchanged.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from .synth_config import SynthConfig
from .synth_layout import CAR_COLOURS
from .synth_motion import Drive
from .synth_render import Renderer
from .synth_scene import KIND_BOX, MAT_CAR, MAT_CONCRETE, MAT_GLASS_CABIN


class MovingObjects:
    """Independently moving objects (scale-1 lengths): alternately a vehicle ahead in the
    camera's lane (its gap oscillates with the distance driven: it speeds up and slows down
    relative to the camera, and stops when the camera stops) and an oncoming one in the other
    lane at constant speed (all oncoming objects share one speed, so they never overlap).
    Corridor: cart-sized boxes instead of cars."""

    def __init__(self, config: SynthConfig, drive: Drive, rng):
        self.config, self.style, self.drive = config, config.style, drive
        # one dict per object: kind ('lead' | 'oncoming'), parts (boxes in the object frame,
        # scale 1: centre, half extents, material, colour, texture parameters) and its motion
        self.items = self._make(rng)

    def __len__(self):
        return len(self.items)

    def _make(self, rng):
        cfg, st = self.config, self.style
        n = cfg.moving_objects
        indoor = st.indoor
        n_on = n // 2
        T = max((cfg.frames - 1) / cfg.rate, 1e-3)
        if indoor:
            gap0, spacing, amp, lam, lat_on = 4.5, 4.0, 1.2, 14.0, 0.6
            speed_on = rng.uniform(0.6, 1.2)
        else:
            gap0, spacing, amp, lam, lat_on = 12.0, 18.0, 4.0, 50.0, 1.3
            speed_on = rng.uniform(6.0, 12.0)
        car_cols = CAR_COLOURS
        period = max(1.2, T / max(n_on, 1))
        movers = []
        j_lead = j_on = 0
        for m in range(n):
            col = np.clip(car_cols[rng.integers(len(car_cols))] * (1 + rng.normal(0, 0.05, 3)), 0.02, 0.95)
            if indoor:
                parts = [((0.0, 0.0, 0.4), (0.3, 0.25, 0.4), MAT_CONCRETE, col,
                          (0.0, 0.0, rng.uniform(0, 50), rng.uniform(0, 50)))]
            else:
                ln = rng.uniform(3.8, 4.8)
                off = rng.uniform(-0.3, 0.1) * ln / 2
                parts = [((0.0, 0.0, 0.7), (ln / 2, 0.85, 0.45), MAT_CAR, col, (0.9, 0, 0, 0)),
                         ((off, 0.0, 1.42), (ln * 0.27, 0.75, 0.27), MAT_GLASS_CABIN, col, (0, 0, 0, 0))]
            if m % 2 == 0:
                movers.append(dict(kind='lead', parts=parts, lat=st.lane_offset,
                                   gap=gap0 + spacing * j_lead, amp=amp * rng.uniform(0.6, 1.0),
                                   lam=lam * rng.uniform(0.8, 1.2), phase=rng.uniform(0, 2 * np.pi)))
                j_lead += 1
            else:
                t_pass = (j_on + 0.5 + rng.uniform(-0.15, 0.15)) * period
                movers.append(dict(kind='oncoming', parts=parts, lat=lat_on, speed=speed_on,
                                   t_pass=t_pass, s_pass=float(np.interp(t_pass, self.drive.t, self.drive.s))))
                j_on += 1
        return movers

    def poses(self, t) -> np.ndarray:
        """Poses T_world_obj of the moving objects at time(s) t (seconds since the first frame):
        (N,4,4) for a scalar t, (n,N,4,4) for an array. The object frame is on the ground under
        the object's centre, x forward (its direction of travel), y left, z up."""
        scalar = np.ndim(t) == 0
        tt = np.atleast_1d(np.asarray(t, float))
        out = np.zeros((len(tt), len(self.items), 4, 4))
        road, k = self.drive.road, self.config.scale
        s_cam = np.interp(tt, self.drive.t, self.drive.s)
        for m, mv in enumerate(self.items):
            if mv['kind'] == 'lead':   # ahead in the camera's lane, its gap varies with the distance driven
                s = s_cam + mv['gap'] + mv['amp'] * np.sin(2 * np.pi * s_cam / mv['lam'] + mv['phase'])
                yaw = road.heading_at(s)
            else:                      # oncoming in the other lane at constant speed, passes at t_pass
                s = mv['s_pass'] + mv['speed'] * (mv['t_pass'] - tt)
                yaw = road.heading_at(s) + np.pi
            h = road.heading_at(s)
            xy = road.point(s) + mv['lat'] * np.stack([-np.sin(h), np.cos(h)], 1)
            c, sn = np.cos(yaw), np.sin(yaw)
            out[:, m, 0, 0], out[:, m, 0, 1], out[:, m, 1, 0], out[:, m, 1, 1] = c, -sn, sn, c
            out[:, m, 2, 2] = out[:, m, 3, 3] = 1.0
            out[:, m, :2, 3] = xy * k
        return out[0] if scalar else out

    def render(self, renderer: Renderer, T: np.ndarray, t: float, s_hint: float):
        """Render the renderer's (static) scene from camera pose T with the objects where they
        are at time t (s since the first frame). Returns (rgb, depth, instance_mask (H,W)
        uint16: 0 = static world, k = object k; object_poses (N,4,4))."""
        poses = self.poses(float(t))
        k = self.config.scale
        cen, half, yaw, mat, col, par, owner = [], [], [], [], [], [], []
        for m, (mv, P) in enumerate(zip(self.items, poses)):
            a = math.atan2(P[1, 0], P[0, 0])
            for (c, h, mt, cl, pr) in mv['parts']:
                cen.append(P[:3, :3] @ (np.asarray(c, float) * k) + P[:3, 3])
                half.append(np.asarray(h, float) * k)
                yaw.append(a)
                mat.append(mt)
                col.append(cl)
                pr = np.array(pr, float)
                pr[:2] *= k
                par.append(pr)
                owner.append(m + 1)
        nb = len(renderer.scene.box_c)
        scene = renderer.scene.with_boxes(cen, half, yaw, mat, col, par)
        r = copy.copy(renderer)
        r.scene = scene
        rgb, depth, kind, obj = r.render(T, s_hint=s_hint, return_labels=True)
        owner = np.asarray(owner, np.uint16)
        dyn = (kind == KIND_BOX) & (obj >= nb)
        mask = np.zeros(depth.shape, np.uint16)
        mask[dyn] = owner[obj[dyn] - nb]
        return rgb, depth, mask, poses


__all__ = ['MovingObjects']
