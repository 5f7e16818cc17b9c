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

Where things are: the configuration, scene styles and frame types in :mod:`.synth_config`
(importable from here), the drive in :mod:`.synth_motion`, the static layout in
:mod:`.synth_layout`, moving objects in :mod:`.synth_movers`, rendering in :mod:`.synth_render`
(primitives :mod:`.synth_scene`, ray casting :mod:`.synth_raycast`, textures
:mod:`.synth_textures`) and bag writing in :mod:`.synth_bag`.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Iterator

import numpy as np

from .synth_config import (
    R_BASE_OPTICAL,
    SCENE_STYLES,
    OdometrySamples,
    SceneStyle,
    SynthConfig,
    SynthFrame,
)
from .synth_layout import build_scene
from .synth_motion import Drive
from .synth_movers import MovingObjects
from .synth_render import Renderer

__all__ = ['SynthConfig', 'SceneStyle', 'SCENE_STYLES', 'SynthFrame', 'OdometrySamples',
           'SyntheticWorld', 'R_BASE_OPTICAL']


class SyntheticWorld:
    """A generated world + trajectory. Frames are rendered on demand (see :meth:`frames`)."""

    def __init__(self, config: SynthConfig | None = None, **overrides):
        cfg = config or SynthConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        self.config = cfg
        self.style = cfg.style
        self.K = cfg.intrinsics()
        self.width, self.height = cfg.width, cfg.height
        rng = np.random.default_rng(cfg.seed)
        self.drive = Drive(cfg, np.random.default_rng(rng.integers(2**63)))
        self.scene = build_scene(cfg, self.drive, np.random.default_rng(rng.integers(2**63)))
        self.renderer = Renderer(self.scene, self.K, cfg.width, cfg.height, seed=cfg.seed,
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
        self.T_world_base = self.drive.base_pose(t)
        self.T_base_cam = np.eye(4)
        self.T_base_cam[:3, :3] = R_BASE_OPTICAL
        self.T_base_cam[2, 3] = self.style.camera_height * cfg.scale
        self.T_world_cam = self.T_world_base @ self.T_base_cam
        self.speeds = self.drive.base_speed(t)
        self._s_frames = np.interp(t, self.drive.t, self.drive.s)
        # moving objects (none unless cfg.moving_objects): their own generator, so that a world
        # without them is unchanged
        self.movers = MovingObjects(cfg, self.drive, np.random.default_rng([cfg.seed, 0x6D6F7665]))
        self._movers = self.movers.items                  # one dict per object

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
            _s_hint = self._nearest_station(T)
        return self.renderer.render(T, s_hint=_s_hint)

    @property
    def num_moving_objects(self) -> int:
        return len(self._movers)

    def object_poses(self, t) -> np.ndarray:
        """Poses T_world_obj of the moving objects at time(s) t (seconds since the first frame):
        (N,4,4) for a scalar t, (n,N,4,4) for an array. The object frame is on the ground under
        the object's centre, x forward (its direction of travel), y left, z up."""
        return self.movers.poses(t)

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
        return self.movers.render(self.renderer, T, t, _s_hint)

    def _nearest_station(self, T):
        d = np.linalg.norm(self.scene.road.xy - T[:2, 3], axis=1)
        return float(self.scene.road.s[np.argmin(d)])

    def relative_pose(self, i: int, j: int) -> np.ndarray:
        """T_cam_i_cam_j: maps points of camera j into camera i (pose of camera j in camera i)."""
        return np.linalg.inv(self.T_world_cam[i]) @ self.T_world_cam[j]

    def odometry(self, rate: float | None = None) -> OdometrySamples:
        """Odometry samples at `rate` Hz (default config.odom_rate) covering all frame stamps."""
        return self.drive.odometry(self.stamps_ns, rate)
