"""What the bag dataset reads and how (:class:`DatasetConfig`), the one error it raises
(:class:`BagDatasetError`), the message types it knows, and :class:`Sequence`: consecutive usable
frames of one bag at network resolution. See :mod:`depth_ego_ros.data.dataset` for the whole."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
ODOMETRY = 'nav_msgs/msg/Odometry'
TWIST_STAMPED = 'geometry_msgs/msg/TwistStamped'


class BagDatasetError(ValueError):
    """A bag cannot serve as training data (the message says which bag and why)."""


@dataclass
class DatasetConfig:
    width: int = 640                     # network input resolution
    height: int = 192
    image_topic: str | None = None       # None: the bag's only camera topic (with a camera_info)
    camera_info_topic: str | None = None  # None: sibling 'camera_info' of the image topic
    odom_topic: str | None = None        # None: '/odom' or the only Odometry/TwistStamped topic; '' = off
    frame_offsets: tuple = (-1, 1)       # sources relative to the target, in kept frames
    skip_static: bool = True
    static_speed: float = 0.05           # m/s: below this (odometry) a frame is static
    static_diff: float = 1.0             # mean |grey change| (0-255) on a thumbnail, without odometry
    max_gap: float | None = None         # s: a larger stamp gap starts a new sequence (None: 5 x median dt)
    augment: bool = True
    flip_probability: float = 0.5
    color_probability: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1
    val_fraction: float = 0.1            # share of sequences held out (split='val')
    exclude_prefixes: tuple = ('/ground_truth',)  # never auto-picked as camera/odometry topics
    mask_topic: str | None = None        # instance masks: None = auto (an Image topic named *mask*), '' = off
    max_objects: int = 8                 # M: instance-mask slots per sample (padding = zero masks)
    require_camera_info: bool = True     # False: a bag without CameraInfo gives K = NaN, has_K False

    def __post_init__(self):
        errs = []
        if int(self.width) < 16 or int(self.height) < 16:
            errs.append(f'width/height must be >= 16 (got {self.width}x{self.height})')
        offs = tuple(int(o) for o in self.frame_offsets)
        if not offs or 0 in offs or len(set(offs)) != len(offs):
            errs.append(f'frame_offsets must be distinct non-zero ints (got {self.frame_offsets})')
        self.frame_offsets = offs
        if not 0.0 <= self.val_fraction < 1.0:
            errs.append(f'val_fraction must be in [0, 1) (got {self.val_fraction})')
        for n in ('flip_probability', 'color_probability'):
            if not 0.0 <= getattr(self, n) <= 1.0:
                errs.append(f'{n} must be in [0, 1]')
        if not int(self.max_objects) >= 1:
            errs.append(f'max_objects must be >= 1 (got {self.max_objects})')
        if self.max_gap is not None and not self.max_gap > 0:
            errs.append(f'max_gap must be > 0 or None (got {self.max_gap})')
        if errs:
            raise ValueError('invalid DatasetConfig: ' + '; '.join(errs))
        self.width, self.height = int(self.width), int(self.height)


@dataclass
class Sequence:
    """Consecutive usable frames of one bag at network resolution."""
    name: str
    bag: str
    images: np.ndarray           # (N,H,W,3) uint8
    stamps: np.ndarray           # (N,) float64 seconds
    K: np.ndarray                # (N,3,3) float64 at network resolution
    distance: np.ndarray         # (N,) cumulative odometry distance, metres (NaN = unknown)
    speed: np.ndarray            # (N,) odometry speed, m/s (NaN = unknown)
    dropped_static: int = 0
    masks: np.ndarray | None = None  # (N,H,W) uint16 instance ids at network res (mask topic), else None
    heading: np.ndarray | None = None  # (N,) integrated odometry yaw rate, radians (NaN/None = unknown)

    def __len__(self):
        return len(self.stamps)

    def subset(self, start, stop, name):
        sl = slice(start, stop)
        return Sequence(name=name, bag=self.bag, images=self.images[sl], stamps=self.stamps[sl],
                        K=self.K[sl], distance=self.distance[sl], speed=self.speed[sl],
                        masks=None if self.masks is None else self.masks[sl],
                        heading=None if self.heading is None else self.heading[sl])

