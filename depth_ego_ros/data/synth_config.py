"""What defines a synthetic sequence and what it yields: scene styles, the configuration, frames
and odometry samples (no rendering here; see :mod:`.synth` for the world itself).

Everything the synthetic world produces is a deterministic function of :class:`SynthConfig`
(seed included).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .synth_scene import (
    MAT_BRICK,
    MAT_CONCRETE,
    MAT_FACADE,
    MAT_TILE_WALL,
)

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
    wall_materials: tuple = (MAT_FACADE, MAT_BRICK, MAT_CONCRETE)
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
        wall_materials=(MAT_TILE_WALL, MAT_CONCRETE), haze_distance=80.0,
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
    """One rendered camera frame and its exact ground truth."""

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


__all__ = ['OdometrySamples', 'R_BASE_OPTICAL', 'SCENE_STYLES', 'SceneStyle', 'SynthConfig',
           'SynthFrame']
