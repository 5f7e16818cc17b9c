"""The synthetic camera's drive: a car-like speed plan, the road it follows and its body motion.

Motion is like a car (or a robot in the ``corridor`` scene): it follows a road made of straights
and clothoid-eased turns, changes speed, stops (frames during a stop are exactly identical) and
drives on; the body pitches when braking, rolls outwards in turns and on small road bumps. A
constant-velocity motion model is a poor predictor of it on purpose. :meth:`Drive.odometry` gives
what a wheel odometry would report of it (optionally noisy).

Lengths are at scale 1 inside (the road, the plan); poses come out in world units
(``config.scale``). Deterministic: everything comes from the generator handed in.
"""
from __future__ import annotations

import math

import numpy as np

from .synth_config import OdometrySamples, SynthConfig
from .synth_scene import Road


# ----------------------------------------------------------------------------------------------
# rotations
# ----------------------------------------------------------------------------------------------
def _rpy_to_matrix(roll, pitch, yaw):
    """Rz(yaw) @ Ry(pitch) @ Rx(roll), vectorised -> (n,3,3)."""
    roll, pitch, yaw = np.broadcast_arrays(np.asarray(roll, float), np.asarray(pitch, float),
                                           np.asarray(yaw, float))
    cr, sr_, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    R = np.empty(roll.shape + (3, 3))
    R[..., 0, 0] = cy * cp
    R[..., 0, 1] = cy * sp * sr_ - sy * cr
    R[..., 0, 2] = cy * sp * cr + sy * sr_
    R[..., 1, 0] = sy * cp
    R[..., 1, 1] = sy * sp * sr_ + cy * cr
    R[..., 1, 2] = sy * sp * cr - cy * sr_
    R[..., 2, 0] = -sp
    R[..., 2, 1] = cp * sr_
    R[..., 2, 2] = cp * cr
    return R


def _so3_log(R):
    """(n,3,3) -> (n,3) rotation vectors (small and moderate angles)."""
    tr = np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    ang = np.arccos(tr)
    w = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], 1)
    s = np.sin(ang)
    fac = np.where(s > 1e-9, ang / (2 * np.where(s > 1e-9, s, 1.0)), 0.5)
    return w * fac[:, None]


# ----------------------------------------------------------------------------------------------
# the drive
# ----------------------------------------------------------------------------------------------
class Drive:
    """Speed plan (``t``, ``v``, ``a``, ``s``: time, speed, acceleration and distance along the
    road at scale 1, sampled every ``DT`` s), the road (``road``, curvature ``kappa``) and the
    body pose of base_link at any time."""

    DT = 0.005  # trajectory integration step, s

    def __init__(self, config: SynthConfig, rng):
        self.config = config
        self.style = config.style
        self._plan_speed(rng)
        self.road = self._make_road(rng, self.s[-1] + config.max_distance + 60.0)
        # lane wander and bumps are functions of the distance travelled (still when stopped)
        self._wob = (rng.uniform(30, 70), rng.uniform(0, 2 * np.pi), rng.uniform(13, 29), rng.uniform(0, 2 * np.pi))
        self._bump = rng.uniform(0, 2 * np.pi, 4)

    def _plan_speed(self, rng):
        """Cruise segments at varying speeds with stops between, integrated with limited
        acceleration and jerk: sets ``t``, ``v``, ``a``, ``s``."""
        cfg, st = self.config, self.style
        T = (cfg.frames - 1) / cfg.rate + 1.0
        dt = self.DT
        # --- speed plan: cruise segments at varying speeds, stops in between
        plan = []  # (duration, target speed)
        tt = 0.0
        k = 0
        while tt < T + 2.0:
            after_stop = bool(plan) and plan[-1][1] == 0
            if k > 0 and not after_stop and (k == 2 and T >= 10.0 or rng.random() < st.stop_probability):
                v_prev = plan[-1][1]
                dur = v_prev / st.decel + rng.uniform(*st.stop_hold)
                plan.append((dur, 0.0))
            else:
                dur = rng.uniform(4.0, 8.0) if after_stop else rng.uniform(2.0, 5.0)
                lo, hi = st.speed_range
                v = rng.uniform(lo, hi)
                if plan and plan[-1][1] > 0 and abs(v - plan[-1][1]) < 0.25 * (hi - lo):
                    v = lo + hi - v  # make consecutive cruise speeds clearly different
                plan.append((dur, v))
            tt += plan[-1][0]
            k += 1
        t = np.arange(0.0, tt + dt, dt)
        target = np.full_like(t, plan[-1][1])   # arange may run past the last edge
        edges = np.cumsum([0.0] + [p[0] for p in plan])
        for (d, v), a, b in zip(plan, edges[:-1], edges[1:]):
            target[(t >= a) & (t < b + 1e-12)] = v
        v = np.empty_like(t)
        v[0] = plan[0][1]
        for i in range(1, len(t)):
            dv = np.clip(target[i] - v[i - 1], -st.decel * dt, st.accel * dt)
            v[i] = v[i - 1] + dv
        # soften the ramps (finite jerk) without creating motion inside stops
        w = int(0.4 / dt) | 1
        ker = np.ones(w) / w
        vs = np.convolve(np.pad(v, w // 2, mode='edge'), ker, mode='valid')
        vs[v == 0] = 0.0
        vs = np.where(vs < 1e-3, 0.0, vs)
        self.t = t
        self.v = vs                                   # along-road speed (m/s, scale 1)
        self.a = np.gradient(vs, dt)
        s0 = 25.0
        self.s = s0 + np.concatenate([[0.0], np.cumsum(0.5 * (vs[1:] + vs[:-1]) * dt)])

    def _make_road(self, rng, length) -> Road:
        """Straights and clothoid-eased turns, heading kept within +-max_heading_deg (the road
        never crosses itself); sets ``kappa`` (curvature every 0.25 m)."""
        st = self.style
        ds = 0.25
        n = int(length / ds) + 2
        kappa = np.zeros(n)
        heading_lim = math.radians(st.max_heading_deg)
        s = 40.0  # straight start
        heading = 0.0
        while s < length:
            L = rng.uniform(*st.straight)
            s += L
            if s >= length:
                break
            R = rng.uniform(*st.turn_radius)
            ang = math.radians(rng.uniform(*st.turn_angle_deg))
            sign = rng.choice([-1.0, 1.0])
            new = float(np.clip(heading + sign * ang, -heading_lim, heading_lim))
            if abs(new - heading) < math.radians(10.0):
                new = float(np.clip(heading - sign * ang, -heading_lim, heading_lim))
            sign, ang = (1.0 if new > heading else -1.0), abs(new - heading)
            arc = R * ang
            ramp = min(6.0, arc / 3)
            i0, i1 = int(s / ds), int((s + arc + ramp) / ds)
            ss = np.arange(i0, min(i1, n)) * ds - s
            # trapezoid curvature: ramp up, hold, ramp down (clothoid easing); area = ang
            k_max = ang / arc if arc > 0 else 0.0
            prof = np.clip(np.minimum(ss / ramp, (arc + ramp - ss) / ramp), 0, 1) * k_max * sign
            kappa[i0:i0 + len(prof)] += prof
            heading = new
            s += arc + ramp
        sarr = np.arange(n) * ds
        head = np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * ds)])
        xy = np.zeros((n, 2))
        xy[1:, 0] = np.cumsum(0.5 * (np.cos(head[1:]) + np.cos(head[:-1])) * ds)
        xy[1:, 1] = np.cumsum(0.5 * (np.sin(head[1:]) + np.sin(head[:-1])) * ds)
        self.kappa = kappa
        return Road(s=sarr, xy=xy, heading=head, half_width=st.road_half_width,
                       sidewalk=st.sidewalk)

    def lateral(self, s):
        """Lateral offset from the centre line (left > 0) and its slope d lat / d s at s."""
        st = self.style
        lam1, ph1, lam2, ph2 = self._wob
        lat = st.lane_offset + st.lateral_wobble * (0.7 * np.sin(2 * np.pi * s / lam1 + ph1)
                                                    + 0.3 * np.sin(2 * np.pi * s / lam2 + ph2))
        dlat = st.lateral_wobble * (0.7 * 2 * np.pi / lam1 * np.cos(2 * np.pi * s / lam1 + ph1)
                                    + 0.3 * 2 * np.pi / lam2 * np.cos(2 * np.pi * s / lam2 + ph2))
        return lat, dlat

    def base_pose(self, t):
        """base_link -> world at times t (s since start), vectorised -> (n,4,4), world units."""
        st, k = self.style, self.config.scale
        t = np.atleast_1d(np.asarray(t, float))
        s = np.interp(t, self.t, self.s)
        v = np.interp(t, self.t, self.v)
        a = np.interp(t, self.t, self.a)
        road = self.road
        c = road.point(s)
        h = road.heading_at(s)
        kap = np.interp(s, road.s, self.kappa)
        lat, dlat = self.lateral(s)
        nrm = np.stack([-np.sin(h), np.cos(h)], 1)
        xy = c + lat[:, None] * nrm
        yaw = h + np.arctan(dlat)
        b = self._bump
        pitch = (st.pitch_bump * (0.6 * np.sin(2 * np.pi * s / 9.0 + b[0]) + 0.4 * np.sin(2 * np.pi * s / 4.1 + b[1]))
                 - st.pitch_per_accel * a)
        roll = (0.7 * st.pitch_bump * (0.6 * np.sin(2 * np.pi * s / 7.3 + b[2]) + 0.4 * np.sin(2 * np.pi * s / 3.3 + b[3]))
                + st.roll_per_lat_accel * v * v * kap)
        T = np.zeros((len(t), 4, 4))
        T[:, :3, :3] = _rpy_to_matrix(roll, pitch, yaw)
        T[:, :2, 3] = xy * k
        T[:, 3, 3] = 1.0
        return T

    def base_speed(self, t):
        """Speed of base_link (world units per second) at times t."""
        h = 1e-3
        p = self.base_pose(np.concatenate([t - h, t + h]))[:, :3, 3]
        n = len(t)
        return np.linalg.norm(p[n:] - p[:n], axis=1) / (2 * h)

    def odometry(self, stamps_ns, rate: float | None = None) -> OdometrySamples:
        """Odometry samples at `rate` Hz (default config.odom_rate) covering the frame stamps
        ``stamps_ns`` (int64 ns; the first is t = 0 of the drive)."""
        cfg = self.config
        rate = cfg.odom_rate if rate is None else rate
        end_ns = int(stamps_ns[-1] - stamps_ns[0])
        n = int(math.floor(end_ns * 1e-9 * rate + 1e-9)) + 1
        offs = np.round(np.arange(n) * (1e9 / rate)).astype(np.int64)
        if offs[-1] < end_ns:
            offs = np.append(offs, end_ns)
        t = offs * 1e-9
        h = 1e-3
        Tm, Tp = self.base_pose(t - h), self.base_pose(t + h)
        T0 = self.base_pose(t)
        v_world = (Tp[:, :3, 3] - Tm[:, :3, 3]) / (2 * h)
        lin = np.einsum('nji,nj->ni', T0[:, :3, :3], v_world)         # R^T v
        ang = _so3_log(np.einsum('nji,njk->nik', Tm[:, :3, :3], Tp[:, :3, :3])) / (2 * h)
        true_speed = np.linalg.norm(v_world, axis=1)
        lin_n, ang_n = lin.copy(), ang.copy()
        if cfg.odom_noise > 0:
            rng = np.random.default_rng(cfg.seed + 1234567)
            bias = 1.0 + rng.normal(0, cfg.odom_noise)                  # wheel-radius error
            lin_n = lin * (bias + rng.normal(0, cfg.odom_noise, (len(t), 1)))
            ang_n = ang + rng.normal(0, cfg.odom_noise * 0.1, ang.shape)
        # planar dead reckoning from the (noisy) twist; odom frame = base_link at t = 0
        T = np.zeros((len(t), 4, 4))
        x = y = yaw = 0.0
        for k in range(len(t)):
            c, s = math.cos(yaw), math.sin(yaw)
            T[k] = [[c, -s, 0, x], [s, c, 0, y], [0, 0, 1, 0], [0, 0, 0, 1]]
            if k + 1 < len(t):
                dt = t[k + 1] - t[k]
                x += (c * lin_n[k, 0] - s * lin_n[k, 1]) * dt
                y += (s * lin_n[k, 0] + c * lin_n[k, 1]) * dt
                yaw += ang_n[k, 2] * dt
        return OdometrySamples(stamps=(stamps_ns[0] + offs) * 1e-9,
                               stamps_ns=stamps_ns[0] + offs, T_odom_base=T, linear=lin_n,
                               angular=ang_n, true_speed=true_speed)


__all__ = ['Drive']
