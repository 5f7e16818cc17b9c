"""Synthetic world: procedurally generated textured scenes, a car-like camera trajectory, and exact
RGB / depth / pose / intrinsics / odometry, rendered by the project's own ray caster.

Typical use (in-process, no bag)::

    from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
    world = SyntheticWorld(SynthConfig(frames=50, width=208, height=64, seed=3))
    for f in world.frames():
        f.rgb        # (H,W,3) uint8
        f.depth      # (H,W) float32 z-depth in metres, +inf where the ray sees the sky
        f.K          # (3,3) intrinsics of this image size
        f.T_world_cam  # (4,4) camera (optical frame: x right, y down, z forward) -> world
        f.speed      # m/s of base_link (what /odom reports)

or ``depth-ego synth --out BAG`` / :func:`depth_ego_ros.data.synth_bag.write_synth_bag` for a
rosbag2 (MCAP) with the topics a real camera + odometry would have, plus ground truth.

Conventions
-----------
* world frame: z up, ground plane z = 0 (REP 103 style, like ``map``/``odom``);
* ``base_link``: on the ground under the camera, x forward, y left, z up; it pitches and rolls with
  the body (braking dips the nose, turns roll it outwards, the road has small bumps);
* camera optical frame rigidly mounted at ``(0, 0, camera_height)`` in base_link;
* pixel centres at integer (u, v) = (column, row), as in :mod:`depth_ego_ros.core.geometry`.

Motion is like a car (or a robot in the ``corridor`` scene): it follows a road made of straights
and clothoid-eased turns, changes speed, stops (frames during a stop are exactly identical) and
drives on. A constant-velocity motion model is a poor predictor of it on purpose.

Everything is a deterministic function of :class:`SynthConfig` (seed included).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from . import synth_render as sr

__all__ = ['SynthConfig', 'SceneStyle', 'SCENE_STYLES', 'SynthFrame', 'OdometrySamples',
           'SyntheticWorld', 'R_BASE_OPTICAL']

# camera optical frame (x right, y down, z forward) expressed in base_link (x fwd, y left, z up)
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0],
                           [-1.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class SceneStyle:
    """What kind of place the world is (lengths in metres at scale 1, speeds in m/s)."""
    camera_height: float = 1.5
    road_half_width: float = 4.0
    sidewalk: float = 3.0
    road_markings: bool = True
    lane_offset: float = -1.8          # camera lateral position (negative = right of centre)
    lateral_wobble: float = 0.3        # lane-keeping wander amplitude
    speed_range: tuple = (4.0, 11.0)
    accel: float = 2.5
    decel: float = 3.0
    stop_probability: float = 0.2
    stop_hold: tuple = (1.0, 2.5)      # seconds standing still
    turn_radius: tuple = (15.0, 35.0)
    turn_angle_deg: tuple = (25.0, 80.0)
    straight: tuple = (10.0, 45.0)
    max_heading_deg: float = 70.0      # the road never heads back (no self-crossing)
    setback: tuple = (8.0, 10.0)       # centre line -> building front
    building_length: tuple = (6.0, 16.0)
    building_depth: tuple = (5.0, 8.0)
    building_height: tuple = (4.0, 16.0)
    building_gap: tuple = (0.0, 6.0)
    building_gap_probability: float = 0.35
    pole_spacing: tuple | None = (14.0, 26.0)
    tree_spacing: tuple | None = (10.0, 30.0)
    car_spacing: tuple | None = (8.0, 40.0)
    crate_spacing: tuple | None = (6.0, 20.0)
    ceiling: float | None = None
    indoor: bool = False
    wall_materials: tuple = (sr.MAT_FACADE, sr.MAT_BRICK, sr.MAT_CONCRETE)
    haze_distance: float = 350.0
    pitch_bump: float = 0.004          # rad, road bumps
    pitch_per_accel: float = 0.004     # rad per m/s^2 (nose dips when braking)
    roll_per_lat_accel: float = 0.004  # rad per m/s^2 (body rolls outwards in turns)


SCENE_STYLES = {
    'street': SceneStyle(),
    # an indoor corridor seen by a small robot: narrow, low ceiling, slow, tight turns
    'corridor': SceneStyle(
        camera_height=0.6, road_half_width=0.0, sidewalk=10.0, road_markings=False,
        lane_offset=0.0, lateral_wobble=0.15, speed_range=(0.5, 1.4), accel=0.6, decel=0.8,
        stop_probability=0.3, stop_hold=(1.0, 2.0), turn_radius=(3.0, 5.0),
        turn_angle_deg=(30.0, 80.0), straight=(4.0, 12.0), setback=(1.6, 1.6),
        building_length=(2.0, 4.0), building_depth=(0.3, 0.3), building_height=(3.0, 3.0),
        building_gap=(0.0, 0.0), building_gap_probability=0.0, pole_spacing=None,
        tree_spacing=None, car_spacing=None, crate_spacing=(2.0, 6.0), ceiling=2.6, indoor=True,
        wall_materials=(sr.MAT_TILE_WALL, sr.MAT_CONCRETE), haze_distance=80.0,
        pitch_bump=0.002, pitch_per_accel=0.002, roll_per_lat_accel=0.002),
}


@dataclass
class SynthConfig:
    """Everything that defines a synthetic sequence (deterministic from these values)."""
    frames: int = 200
    width: int = 416
    height: int = 128
    rate: float = 10.0              # camera frame rate, Hz
    seed: int = 0
    scene: str = 'street'           # key of SCENE_STYLES
    hfov_deg: float = 82.0          # horizontal field of view (square pixels)
    scale: float = 1.0              # multiplies every length and speed (a bigger/smaller world)
    texture_scale: float = 1.0      # multiplies texture wavelengths (a different-looking world)
    odom_rate: float = 50.0         # /odom rate, Hz
    odom_noise: float = 0.0         # relative std of the odometry twist noise (0 = exact)
    image_noise: float = 0.0        # std of additive Gaussian pixel noise, in 0-255 units
    supersample: int = 2            # ss x ss colour samples per pixel (anti-aliasing); 1 = fastest
    max_distance: float = 150.0     # objects farther than this (x scale) are not drawn
    start_time: float = 1_700_000_000.0  # stamp of the first frame, seconds
    moving_objects: int = 0         # independently moving objects (cars / carts); 0 = rigid world

    def __post_init__(self):
        errs = []
        if int(self.frames) < 1:
            errs.append(f'frames must be >= 1 (got {self.frames})')
        if int(self.width) < 8 or int(self.height) < 8:
            errs.append(f'width and height must be >= 8 (got {self.width}x{self.height})')
        for name in ('rate', 'odom_rate', 'scale', 'texture_scale', 'max_distance'):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                errs.append(f'{name} must be a positive finite number (got {v!r})')
        if not (0 < self.hfov_deg < 170):
            errs.append(f'hfov_deg must be in (0, 170) (got {self.hfov_deg})')
        if not (isinstance(self.supersample, int) and 1 <= self.supersample <= 4):
            errs.append(f'supersample must be an int in 1..4 (got {self.supersample!r})')
        if self.scene not in SCENE_STYLES:
            errs.append(f'scene must be one of {sorted(SCENE_STYLES)} (got {self.scene!r})')
        if not (isinstance(self.moving_objects, (int, np.integer)) and 0 <= self.moving_objects <= 1000):
            errs.append(f'moving_objects must be an int in 0..1000 (got {self.moving_objects!r})')
        for name in ('odom_noise', 'image_noise'):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                errs.append(f'{name} must be >= 0 (got {v!r})')
        if errs:
            raise ValueError('invalid SynthConfig: ' + '; '.join(errs))
        self.frames, self.width, self.height, self.seed = int(self.frames), int(self.width), int(self.height), int(self.seed)

    @property
    def style(self) -> SceneStyle:
        return SCENE_STYLES[self.scene]

    def intrinsics(self) -> np.ndarray:
        f = 0.5 * self.width / math.tan(math.radians(self.hfov_deg) / 2)
        return np.array([[f, 0.0, (self.width - 1) / 2.0],
                         [0.0, f, (self.height - 1) / 2.0],
                         [0.0, 0.0, 1.0]])


@dataclass
class SynthFrame:
    index: int
    stamp: float                 # seconds (float64; stamp_ns is exact)
    stamp_ns: int                # nanoseconds since the epoch
    rgb: np.ndarray              # (H,W,3) uint8
    depth: np.ndarray            # (H,W) float32 z-depth, metres; +inf = sky (no surface)
    K: np.ndarray                # (3,3)
    T_world_cam: np.ndarray      # (4,4) camera optical frame -> world
    T_world_base: np.ndarray     # (4,4) base_link -> world
    speed: float                 # base_link speed, m/s
    render_ms: float = 0.0
    # moving objects (None when the world has none): instance id per pixel (0 = static world,
    # k = moving object k, the same id in every frame) and each object's pose T_world_obj
    instance_mask: np.ndarray | None = None   # (H,W) uint16
    object_poses: np.ndarray | None = None    # (N,4,4), row k-1 = object k


@dataclass
class OdometrySamples:
    """Wheel-odometry-like samples of base_link (what /odom carries)."""
    stamps: np.ndarray           # (n,) seconds
    stamps_ns: np.ndarray        # (n,) int64 nanoseconds
    T_odom_base: np.ndarray      # (n,4,4) dead-reckoned pose (odom frame = base_link at t0)
    linear: np.ndarray           # (n,3) body-frame linear velocity (m/s), noisy if odom_noise
    angular: np.ndarray          # (n,3) body-frame angular velocity (rad/s)
    true_speed: np.ndarray       # (n,) exact base_link speed


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
# the world
# ----------------------------------------------------------------------------------------------
class SyntheticWorld:
    """A generated world + trajectory. Frames are rendered on demand (see :meth:`frames`)."""

    _DT = 0.005  # trajectory integration step, s

    def __init__(self, config: SynthConfig | None = None, **overrides):
        cfg = config or SynthConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        self.config = cfg
        self.style = cfg.style
        self.K = cfg.intrinsics()
        self.width, self.height = cfg.width, cfg.height
        rng = np.random.default_rng(cfg.seed)
        self._make_motion(np.random.default_rng(rng.integers(2**63)))
        self.scene = self._make_scene(np.random.default_rng(rng.integers(2**63)))
        self.renderer = sr.Renderer(self.scene, self.K, cfg.width, cfg.height, seed=cfg.seed,
                                    max_distance=cfg.max_distance * cfg.scale,
                                    supersample=cfg.supersample)
        self._noise_seed = int(rng.integers(2**31))
        # per-frame ground truth
        start_ns = int(round(cfg.start_time * 1e9))
        offs_ns = np.round(np.arange(cfg.frames) * (1e9 / cfg.rate)).astype(np.int64)
        self.stamps_ns = start_ns + offs_ns               # exact integer stamps (header/bag time)
        t = offs_ns * 1e-9
        self.times = t                                   # seconds since start
        self.stamps = self.stamps_ns * 1e-9              # seconds (float; use stamps_ns for exact)
        self.T_world_base = self._base_pose(t)
        self.T_base_cam = np.eye(4)
        self.T_base_cam[:3, :3] = R_BASE_OPTICAL
        self.T_base_cam[2, 3] = self.style.camera_height * cfg.scale
        self.T_world_cam = self.T_world_base @ self.T_base_cam
        self.speeds = self._base_speed(t)
        self._s_frames = np.interp(t, self._t, self._s)
        # moving objects: their own generator, so that a world without them is unchanged
        self._movers = (self._make_movers(np.random.default_rng([cfg.seed, 0x6D6F7665]))
                        if cfg.moving_objects else [])

    # ------------------------------------------------------------------ public API
    def __len__(self):
        return self.config.frames

    def frame(self, i: int) -> SynthFrame:
        """Render frame i (0-based)."""
        if not 0 <= i < len(self):
            raise IndexError(f'frame {i} out of range 0..{len(self) - 1}')
        t0 = time.perf_counter()
        mask = poses = None
        if self._movers:
            rgb, depth, mask, poses = self.render_with_objects(self.T_world_cam[i], float(self.times[i]),
                                                               _s_hint=self._s_frames[i])
        else:
            rgb, depth = self.render(self.T_world_cam[i], _s_hint=self._s_frames[i])
        if self.config.image_noise > 0:
            rng = np.random.default_rng(self._noise_seed + i)
            noisy = rgb.astype(np.float32) + rng.normal(0, self.config.image_noise, rgb.shape)
            rgb = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
        return SynthFrame(index=i, stamp=float(self.stamps[i]), stamp_ns=int(self.stamps_ns[i]), rgb=rgb, depth=depth,
                          K=self.K.copy(), T_world_cam=self.T_world_cam[i].copy(),
                          T_world_base=self.T_world_base[i].copy(), speed=float(self.speeds[i]),
                          render_ms=(time.perf_counter() - t0) * 1e3, instance_mask=mask,
                          object_poses=poses)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[SynthFrame]:
        """Iterate rendered frames start..stop-1 (the in-process alternative to a bag)."""
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            yield self.frame(i)

    __iter__ = frames

    def render(self, T_world_cam: np.ndarray, _s_hint: float | None = None):
        """Render the world from any camera pose (4x4 optical frame -> world).
        Returns (rgb uint8 HxWx3, depth float32 HxW, +inf = sky)."""
        T = np.asarray(T_world_cam, float)
        if _s_hint is None:  # nearest road station to the camera
            d = np.linalg.norm(self.scene.road.xy - T[:2, 3], axis=1)
            _s_hint = float(self.scene.road.s[np.argmin(d)])
        return self.renderer.render(T, s_hint=_s_hint)

    @property
    def num_moving_objects(self) -> int:
        return len(self._movers)

    def object_poses(self, t) -> np.ndarray:
        """Poses T_world_obj of the moving objects at time(s) t (seconds since the first frame):
        (N,4,4) for a scalar t, (n,N,4,4) for an array. The object frame is on the ground under
        the object's centre, x forward (its direction of travel), y left, z up."""
        scalar = np.ndim(t) == 0
        tt = np.atleast_1d(np.asarray(t, float))
        out = np.zeros((len(tt), len(self._movers), 4, 4))
        road, k = self._road, self.config.scale
        s_cam = np.interp(tt, self._t, self._s)
        for m, mv in enumerate(self._movers):
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

    def frame_object_poses(self, i: int) -> np.ndarray:
        """(N,4,4) T_world_obj of every moving object at frame i."""
        return self.object_poses(float(self.times[i]))

    def object_motion(self, i: int, j: int) -> np.ndarray:
        """(N,4,4) motion of each object from frame i to frame j expressed in camera i's frame:
        ``T_cam_i_world @ T_world_obj(j) @ inv(T_world_obj(i)) @ T_world_cam_i`` -- it maps a
        point of the object at time i (camera-i coordinates) to where that point is at time j
        (still camera-i coordinates). A point on object m seen in camera i is then seen in
        camera j at ``relative_pose(j, i) @ object_motion(i, j)[m] @ p`` (the warp used by
        :mod:`depth_ego_ros.core.object_motion`)."""
        Pi, Pj = self.frame_object_poses(i), self.frame_object_poses(j)
        Twc = self.T_world_cam[i]
        return np.linalg.inv(Twc) @ Pj @ np.linalg.inv(Pi) @ Twc

    def render_with_objects(self, T_world_cam: np.ndarray, t: float, _s_hint: float | None = None):
        """Render from any camera pose with the moving objects where they are at time t (s since
        the first frame). Returns (rgb, depth, instance_mask (H,W) uint16: 0 = static world,
        k = object k; object_poses (N,4,4))."""
        T = np.asarray(T_world_cam, float)
        if _s_hint is None:
            _s_hint = self._nearest_station(T)
        poses = self.object_poses(float(t))
        k = self.config.scale
        cen, half, yaw, mat, col, par, owner = [], [], [], [], [], [], []
        for m, (mv, P) in enumerate(zip(self._movers, poses)):
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
        nb = len(self.scene.box_c)
        scene = self.scene.with_boxes(cen, half, yaw, mat, col, par)
        r = copy.copy(self.renderer)
        r.scene = scene
        rgb, depth, kind, obj = r.render(T, s_hint=_s_hint, return_labels=True)
        owner = np.asarray(owner, np.uint16)
        dyn = (kind == sr.KIND_BOX) & (obj >= nb)
        mask = np.zeros(depth.shape, np.uint16)
        mask[dyn] = owner[obj[dyn] - nb]
        return rgb, depth, mask, poses

    def _nearest_station(self, T):
        d = np.linalg.norm(self.scene.road.xy - T[:2, 3], axis=1)
        return float(self.scene.road.s[np.argmin(d)])

    def relative_pose(self, i: int, j: int) -> np.ndarray:
        """T_cam_i_cam_j: maps points of camera j into camera i (pose of camera j in camera i)."""
        return np.linalg.inv(self.T_world_cam[i]) @ self.T_world_cam[j]

    def odometry(self, rate: float | None = None) -> OdometrySamples:
        """Odometry samples at `rate` Hz (default config.odom_rate) covering all frame stamps."""
        cfg = self.config
        rate = cfg.odom_rate if rate is None else rate
        end_ns = int(self.stamps_ns[-1] - self.stamps_ns[0])
        n = int(math.floor(end_ns * 1e-9 * rate + 1e-9)) + 1
        offs = np.round(np.arange(n) * (1e9 / rate)).astype(np.int64)
        if offs[-1] < end_ns:
            offs = np.append(offs, end_ns)
        t = offs * 1e-9
        h = 1e-3
        Tm, Tp = self._base_pose(t - h), self._base_pose(t + h)
        T0 = self._base_pose(t)
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
        return OdometrySamples(stamps=(self.stamps_ns[0] + offs) * 1e-9,
                               stamps_ns=self.stamps_ns[0] + offs, T_odom_base=T, linear=lin_n,
                               angular=ang_n, true_speed=true_speed)

    # ------------------------------------------------------------------ motion
    def _make_motion(self, rng):
        cfg, st = self.config, self.style
        T = (cfg.frames - 1) / cfg.rate + 1.0
        dt = self._DT
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
        self._t = t
        self._v = vs                                   # along-road speed (m/s, scale 1)
        self._a = np.gradient(vs, dt)
        s0 = 25.0
        self._s = s0 + np.concatenate([[0.0], np.cumsum(0.5 * (vs[1:] + vs[:-1]) * dt)])
        self._road = self._make_road(rng, self._s[-1] + cfg.max_distance + 60.0)
        # lane wander and bumps are functions of the distance travelled (still when stopped)
        self._wob = (rng.uniform(30, 70), rng.uniform(0, 2 * np.pi), rng.uniform(13, 29), rng.uniform(0, 2 * np.pi))
        self._bump = rng.uniform(0, 2 * np.pi, 4)

    def _make_road(self, rng, length):
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
        self._kappa = kappa
        return sr.Road(s=sarr, xy=xy, heading=head, half_width=st.road_half_width,
                       sidewalk=st.sidewalk)

    def _lateral(self, s):
        st = self.style
        lam1, ph1, lam2, ph2 = self._wob
        lat = st.lane_offset + st.lateral_wobble * (0.7 * np.sin(2 * np.pi * s / lam1 + ph1)
                                                    + 0.3 * np.sin(2 * np.pi * s / lam2 + ph2))
        dlat = st.lateral_wobble * (0.7 * 2 * np.pi / lam1 * np.cos(2 * np.pi * s / lam1 + ph1)
                                    + 0.3 * 2 * np.pi / lam2 * np.cos(2 * np.pi * s / lam2 + ph2))
        return lat, dlat

    def _base_pose(self, t):
        """base_link -> world at times t (s since start), vectorised -> (n,4,4), world units."""
        st, k = self.style, self.config.scale
        t = np.atleast_1d(np.asarray(t, float))
        s = np.interp(t, self._t, self._s)
        v = np.interp(t, self._t, self._v)
        a = np.interp(t, self._t, self._a)
        road = self._road
        c = road.point(s)
        h = road.heading_at(s)
        kap = np.interp(s, road.s, self._kappa)
        lat, dlat = self._lateral(s)
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

    def _base_speed(self, t):
        h = 1e-3
        p = self._base_pose(np.concatenate([t - h, t + h]))[:, :3, 3]
        n = len(t)
        return np.linalg.norm(p[n:] - p[:n], axis=1) / (2 * h)

    # ------------------------------------------------------------------ moving objects
    def _make_movers(self, rng):
        """Independently moving objects (scale-1 lengths): alternately a vehicle ahead in the
        camera's lane (its gap oscillates with the distance driven: it speeds up and slows down
        relative to the camera, and stops when the camera stops) and an oncoming one in the other
        lane at constant speed (all oncoming objects share one speed, so they never overlap).
        Corridor: cart-sized boxes instead of cars."""
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
        car_cols = np.array([[0.55, 0.05, 0.05], [0.05, 0.15, 0.45], [0.75, 0.75, 0.78],
                             [0.08, 0.08, 0.09], [0.25, 0.35, 0.25], [0.70, 0.55, 0.15]])
        period = max(1.2, T / max(n_on, 1))
        movers = []
        j_lead = j_on = 0
        for m in range(n):
            col = np.clip(car_cols[rng.integers(len(car_cols))] * (1 + rng.normal(0, 0.05, 3)), 0.02, 0.95)
            if indoor:
                parts = [((0.0, 0.0, 0.4), (0.3, 0.25, 0.4), sr.MAT_CONCRETE, col,
                          (0.0, 0.0, rng.uniform(0, 50), rng.uniform(0, 50)))]
            else:
                ln = rng.uniform(3.8, 4.8)
                off = rng.uniform(-0.3, 0.1) * ln / 2
                parts = [((0.0, 0.0, 0.7), (ln / 2, 0.85, 0.45), sr.MAT_CAR, col, (0.9, 0, 0, 0)),
                         ((off, 0.0, 1.42), (ln * 0.27, 0.75, 0.27), sr.MAT_GLASS_CABIN, col, (0, 0, 0, 0))]
            if m % 2 == 0:
                movers.append(dict(kind='lead', parts=parts, lat=st.lane_offset,
                                   gap=gap0 + spacing * j_lead, amp=amp * rng.uniform(0.6, 1.0),
                                   lam=lam * rng.uniform(0.8, 1.2), phase=rng.uniform(0, 2 * np.pi)))
                j_lead += 1
            else:
                t_pass = (j_on + 0.5 + rng.uniform(-0.15, 0.15)) * period
                movers.append(dict(kind='oncoming', parts=parts, lat=lat_on, speed=speed_on,
                                   t_pass=t_pass, s_pass=float(np.interp(t_pass, self._t, self._s))))
                j_on += 1
        return movers

    # ------------------------------------------------------------------ scene content
    def _make_scene(self, rng) -> sr.Scene:
        cfg, st = self.config, self.style
        road = self._road
        L = road.s[-1]
        boxes, cyls, sphs = [], [], []   # tuples at scale 1

        def frame_at(s):
            p = road.point(s)
            h = float(road.heading_at(s))
            return p, h, np.array([-math.sin(h), math.cos(h)])

        def local_radius(s0, s1):
            i0, i1 = int(max(s0, 0) / 0.25), int(min(s1, L) / 0.25) + 1
            km = np.abs(self._kappa[i0:i1]).max() if i1 > i0 else 0.0
            return 1.0 / km if km > 1e-6 else 1e9

        palette = np.array([[0.72, 0.62, 0.50], [0.60, 0.35, 0.28], [0.75, 0.72, 0.66],
                            [0.55, 0.58, 0.62], [0.80, 0.70, 0.45], [0.45, 0.50, 0.42],
                            [0.70, 0.50, 0.40], [0.62, 0.60, 0.70]])
        car_cols = np.array([[0.55, 0.05, 0.05], [0.05, 0.15, 0.45], [0.75, 0.75, 0.78],
                             [0.08, 0.08, 0.09], [0.25, 0.35, 0.25], [0.70, 0.55, 0.15]])

        def jitter(c, amt=0.08):
            return np.clip(c * (1 + rng.normal(0, amt, 3)), 0.02, 0.95)

        # buildings / walls along both sides
        for side in (-1.0, 1.0):
            s = rng.uniform(0, 4)
            while s < L:
                length = rng.uniform(*st.building_length)
                R = local_radius(s - 5, s + length + 5)
                length = min(length, max(2.0, 2 * math.sqrt(2 * R * 0.8)))
                depth = rng.uniform(*st.building_depth)
                height = rng.uniform(*st.building_height)
                setback = rng.uniform(*st.setback)
                sc_ = s + length / 2
                p, h, nrm = frame_at(sc_)
                cen = p + side * (setback + depth / 2) * nrm
                mat = int(rng.choice(st.wall_materials))
                col = jitter(palette[rng.integers(len(palette))])
                par = [rng.uniform(2.2, 3.6), rng.uniform(2.8, 3.4), rng.uniform(0, 50), rng.uniform(0, 50)]
                boxes.append(((cen[0], cen[1], height / 2), (length / 2, depth / 2, height / 2), h, mat, col, par))
                s += length
                if rng.random() < st.building_gap_probability:
                    s += rng.uniform(*st.building_gap)
        hw, sw = st.road_half_width, st.sidewalk
        # street lights / poles at the kerb
        if st.pole_spacing:
            for side in (-1.0, 1.0):
                s = rng.uniform(0, st.pole_spacing[1])
                while s < L:
                    p, h, nrm = frame_at(s)
                    c = p + side * (hw + 0.45) * nrm
                    cyls.append((c, rng.uniform(0.08, 0.14), (0.0, rng.uniform(4.5, 7.0)), sr.MAT_METAL,
                                 jitter(np.array([0.45, 0.47, 0.5]), 0.15)))
                    s += rng.uniform(*st.pole_spacing)
        # trees on the sidewalk
        if st.tree_spacing:
            for side in (-1.0, 1.0):
                s = rng.uniform(0, st.tree_spacing[1])
                while s < L:
                    p, h, nrm = frame_at(s)
                    c = p + side * (hw + sw * rng.uniform(0.55, 0.75)) * nrm
                    trunk_h = rng.uniform(2.2, 3.5)
                    cyls.append((c, rng.uniform(0.12, 0.25), (0.0, trunk_h), sr.MAT_BARK,
                                 jitter(np.array([0.35, 0.25, 0.17]))))
                    r = rng.uniform(1.0, 1.9)
                    sphs.append(((c[0], c[1], trunk_h + 0.6 * r), r, sr.MAT_FOLIAGE,
                                 jitter(np.array([0.20, 0.38, 0.12]), 0.2)))
                    s += rng.uniform(*st.tree_spacing)
        # parked cars along the left kerb (the camera drives on the right)
        if st.car_spacing:
            s = rng.uniform(0, st.car_spacing[1])
            while s < L:
                p, h, nrm = frame_at(s)
                c = p + (hw - 1.0) * nrm
                col = jitter(car_cols[rng.integers(len(car_cols))], 0.05)
                ln = rng.uniform(3.8, 4.8)
                boxes.append(((c[0], c[1], 0.7), (ln / 2, 0.88, 0.45), h, sr.MAT_CAR, col, [0.9, 0, 0, 0]))
                off = rng.uniform(-0.3, 0.1) * ln / 2
                cc = c + off * np.array([math.cos(h), math.sin(h)])
                boxes.append(((cc[0], cc[1], 1.42), (ln * 0.27, 0.78, 0.27), h, sr.MAT_GLASS_CABIN, col, [0, 0, 0, 0]))
                s += ln + rng.uniform(*st.car_spacing)
        # crates, bins, kiosks along the building line
        if st.crate_spacing:
            for side in (-1.0, 1.0):
                s = rng.uniform(0, st.crate_spacing[1])
                while s < L:
                    p, h, nrm = frame_at(s)
                    size = rng.uniform(0.4, 1.2) * (0.6 if st.indoor else 1.0)
                    lat = (st.setback[0] - size / 2 - 0.15) if st.indoor else (hw + sw - size / 2 - 0.2)
                    c = p + side * lat * nrm
                    hz = rng.uniform(0.5, 1.6) * size
                    mat = sr.MAT_CRATE if rng.random() < 0.6 else sr.MAT_CONCRETE
                    col = jitter(np.array([0.55, 0.42, 0.28]) if mat == sr.MAT_CRATE else palette[rng.integers(len(palette))])
                    boxes.append(((c[0], c[1], hz / 2), (size / 2, size / 2, hz / 2), h + rng.uniform(-0.3, 0.3),
                                  mat, col, [2.5, 3.0, rng.uniform(0, 50), 0]))
                    s += rng.uniform(*st.crate_spacing)

        k = cfg.scale
        scene = sr.Scene(road=sr.Road(s=road.s * k, xy=road.xy * k, heading=road.heading,
                                      half_width=road.half_width * k, sidewalk=road.sidewalk * k,
                                      lane_dash=3.0 * k))
        if boxes:
            scene.box_c = np.array([b[0] for b in boxes], float) * k
            scene.box_h = np.array([b[1] for b in boxes], float) * k
            scene.box_yaw = np.array([b[2] for b in boxes], float)
            scene.box_mat = np.array([b[3] for b in boxes], int)
            scene.box_col = np.array([b[4] for b in boxes], float)
            scene.box_par = np.array([b[5] for b in boxes], float)
            scene.box_par[:, :2] *= k   # window grid spacing is a length
        if cyls:
            scene.cyl_c = np.array([c[0] for c in cyls], float) * k
            scene.cyl_r = np.array([c[1] for c in cyls], float) * k
            scene.cyl_z = np.array([c[2] for c in cyls], float) * k
            scene.cyl_mat = np.array([c[3] for c in cyls], int)
            scene.cyl_col = np.array([c[4] for c in cyls], float)
        if sphs:
            scene.sph_c = np.array([s_[0] for s_ in sphs], float) * k
            scene.sph_r = np.array([s_[1] for s_ in sphs], float) * k
            scene.sph_mat = np.array([s_[2] for s_ in sphs], int)
            scene.sph_col = np.array([s_[3] for s_ in sphs], float)
        scene.ceiling = None if st.ceiling is None else st.ceiling * k
        scene.indoor = st.indoor
        scene.haze_distance = st.haze_distance * k
        scene.texture_scale = k * cfg.texture_scale
        scene.markings = st.road_markings
        az = rng.uniform(0, 2 * np.pi)
        el = math.radians(rng.uniform(30, 60))
        scene.sun_dir = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
        g = np.array([[0.20, 0.20, 0.21], [0.50, 0.48, 0.45], [0.30, 0.38, 0.18]])
        if st.indoor:
            g = np.array([[0.45, 0.42, 0.38], [0.52, 0.47, 0.40], [0.45, 0.42, 0.38]])
        scene.ground_colors = np.clip(g * (1 + rng.normal(0, 0.08, g.shape)), 0.02, 0.95)
        return scene.finalize()
