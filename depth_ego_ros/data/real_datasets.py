"""Small readers for public RGB-D / driving dataset layouts.

Formats covered (each reader takes plain paths; nothing here knows where test data lives, and no
code path of the package needs these files at run time):

* **TUM RGB-D**: ``rgb.txt`` / ``depth.txt`` lists (``timestamp filename``), 16-bit depth PNG
  (metres = value / 5000, 0 = invalid), ``groundtruth.txt`` (TUM trajectory, camera->world), and
  the simple ``key value`` camera description files used beside our test snippets.
* **KITTI odometry**: ``poses_XX.txt`` (3x4 row-major camera->world of image_0), ``times.txt``,
  the ``key value`` camera description file.
* **DDAD / TRI DGP scene** (``scene_*.json`` + ``calibration/*.json`` + ``point_cloud/*.npz`` +
  ``rgb/*``): per-datum sensor->world poses, per-sensor intrinsics and sensor->vehicle extrinsics,
  LiDAR sweeps as ``(N,4)`` XYZI arrays in the LiDAR frame.
* **SUN3D** in the 3DMatch/7-Scenes packaging: ``frame-XXXXXX.{color,depth}.png`` (depth uint16
  millimetres, 0 = invalid), ``frame-XXXXXX.pose.txt`` (4x4 camera->world), ``camera-intrinsics.txt``.

Trajectory files themselves (TUM / KITTI / EuRoC) are read by
:mod:`depth_ego_ros.evaluation.trajectory`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.geometry import quat_wxyz_to_matrix

__all__ = [
    'CameraDescription', 'read_camera_description', 'read_timestamp_list', 'read_depth_png',
    'read_rgb', 'read_tum_depth_png', 'read_kitti_times',
    'DGPScene', 'DGPDatum', 'read_sun3d_intrinsics', 'read_matrix_txt', 'read_sun3d_depth_png',
]


# ----------------------------------------------------------------------------------------------
# generic image helpers
# ----------------------------------------------------------------------------------------------
def read_rgb(path) -> np.ndarray:
    """Image file -> HxWx3 uint8 RGB (grey images are replicated to 3 channels)."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB')).copy()


def read_depth_png(path, scale: float) -> np.ndarray:
    """16-bit depth PNG -> float32 metres (``value / scale``); 0 stays 0 (= invalid)."""
    from PIL import Image
    with Image.open(path) as im:
        raw = np.asarray(im)
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint32):
        raise ValueError(f'{path}: expected a single-channel 16-bit depth PNG, got {raw.dtype} {raw.shape}')
    return (raw.astype(np.float32) / np.float32(scale)).astype(np.float32)


def read_tum_depth_png(path, depth_scale: float = 5000.0) -> np.ndarray:
    """TUM RGB-D depth PNG -> float32 metres (value / 5000; 0 = invalid)."""
    return read_depth_png(path, depth_scale)


def read_sun3d_depth_png(path) -> np.ndarray:
    """SUN3D (3DMatch packaging) depth PNG -> float32 metres (uint16 millimetres; 0 = invalid)."""
    return read_depth_png(path, 1000.0)


# ----------------------------------------------------------------------------------------------
# text descriptions
# ----------------------------------------------------------------------------------------------
@dataclass
class CameraDescription:
    """Pinhole camera from a ``key value`` description file (``fx fy cx cy width height`` ...).

    ``extra`` keeps every other numeric key (e.g. ``depth_scale``, ``bf_gray``) as floats or
    float lists.
    """
    width: int
    height: int
    K: np.ndarray
    distortion: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def read_camera_description(path) -> CameraDescription:
    """Parse ``key value [value ...]`` lines; ``#`` starts a comment (also at the end of a line)."""
    values: dict[str, list[float]] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.split('#', 1)[0].strip()
        if not line:
            continue
        key, *rest = line.split()
        try:
            values[key] = [float(x) for x in rest]
        except ValueError:
            continue  # non-numeric entries are not part of the camera model
    missing = [k for k in ('width', 'height', 'fx', 'fy', 'cx', 'cy') if k not in values]
    if missing:
        raise ValueError(f'{path}: camera description lacks {missing}')
    K = np.array([[values['fx'][0], 0.0, values['cx'][0]],
                  [0.0, values['fy'][0], values['cy'][0]],
                  [0.0, 0.0, 1.0]])
    dist = None
    for key in list(values):
        if key.startswith('dist'):
            dist = np.array(values.pop(key))
    extra = {k: (v[0] if len(v) == 1 else v) for k, v in values.items()
             if k not in ('width', 'height', 'fx', 'fy', 'cx', 'cy')}
    return CameraDescription(int(values['width'][0]), int(values['height'][0]), K, dist, extra)


def read_timestamp_list(path) -> list[tuple[float, str]]:
    """TUM ``rgb.txt``/``depth.txt``: ``timestamp filename`` lines -> [(stamp, filename)]."""
    out = []
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        stamp, name = line.split()[:2]
        out.append((float(stamp), name))
    return out


def read_kitti_times(path) -> np.ndarray:
    """KITTI ``times.txt`` -> (N,) float64 seconds since the start of the sequence."""
    return np.loadtxt(path, dtype=np.float64, ndmin=1)


def read_matrix_txt(path) -> np.ndarray:
    """Whitespace-separated numeric matrix file (e.g. a 4x4 pose or a 3x3 K) -> float64 array."""
    return np.loadtxt(path, dtype=np.float64, ndmin=2)


def read_sun3d_intrinsics(path) -> np.ndarray:
    """SUN3D / 3DMatch ``camera-intrinsics.txt`` -> (3,3) K."""
    K = read_matrix_txt(path)
    if K.shape != (3, 3):
        raise ValueError(f'{path}: expected a 3x3 matrix, got {K.shape}')
    return K


# ----------------------------------------------------------------------------------------------
# DDAD / DGP scenes
# ----------------------------------------------------------------------------------------------
def _pose_from_dgp(p: dict) -> np.ndarray:
    """DGP pose dict {'rotation': {qw,qx,qy,qz}, 'translation': {x,y,z}} -> 4x4."""
    r, t = p['rotation'], p['translation']
    T = np.eye(4)
    T[:3, :3] = quat_wxyz_to_matrix([r['qw'], r['qx'], r['qy'], r['qz']])
    T[:3, 3] = [t['x'], t['y'], t['z']]
    return T


@dataclass
class DGPDatum:
    """One sensor reading of a DGP scene sample."""
    sensor: str
    kind: str                       # 'image' | 'point_cloud'
    path: Path                      # absolute path of the data file
    timestamp: str                  # ISO string as stored
    T_world_sensor: np.ndarray      # 4x4 sensor->world (DGP 'pose')
    width: int | None = None
    height: int | None = None


class DGPScene:
    """A DDAD-style (TRI DGP) scene: ``scene_*.json`` beside ``calibration/`` and the data folders.

    ``scene.datum(sample_index, sensor)`` gives one reading with its sensor->world pose;
    ``scene.K(sensor)`` the intrinsics; ``scene.T_body_sensor(sensor)`` the calibrated
    sensor->vehicle extrinsic; ``scene.load_points(datum)`` the (N,4) XYZI LiDAR sweep in the LiDAR
    frame. Camera frames are optical frames (x right, y down, z forward).
    """

    def __init__(self, scene_json):
        self.path = Path(scene_json)
        self.root = self.path.parent
        self._scene = json.loads(self.path.read_text())
        self._by_key = {d['key']: d for d in self._scene['data']}
        self.samples = self._scene['samples']
        self._calib_cache: dict[str, dict] = {}

    @classmethod
    def from_folder(cls, folder) -> 'DGPScene':
        files = sorted(Path(folder).glob('scene_*.json'))
        if len(files) != 1:
            raise ValueError(f'{folder}: expected exactly one scene_*.json, found {len(files)}')
        return cls(files[0])

    def __len__(self):
        return len(self.samples)

    def _calibration(self, sample_index: int = 0) -> dict:
        key = self.samples[sample_index]['calibration_key']
        if key not in self._calib_cache:
            calib = json.loads((self.root / 'calibration' / f'{key}.json').read_text())
            self._calib_cache[key] = {name: (intr, extr) for name, intr, extr in
                                      zip(calib['names'], calib['intrinsics'], calib['extrinsics'])}
        return self._calib_cache[key]

    @property
    def sensors(self) -> list[str]:
        return list(self._calibration(0))

    def K(self, sensor: str, sample_index: int = 0) -> np.ndarray:
        intr = self._calibration(sample_index)[sensor][0]
        if not intr.get('fx'):
            raise ValueError(f'sensor {sensor} has no pinhole intrinsics')
        return np.array([[intr['fx'], intr.get('skew', 0.0), intr['cx']],
                         [0.0, intr['fy'], intr['cy']], [0.0, 0.0, 1.0]])

    def T_body_sensor(self, sensor: str, sample_index: int = 0) -> np.ndarray:
        """Calibrated sensor->vehicle-body extrinsic (4x4)."""
        return _pose_from_dgp(self._calibration(sample_index)[sensor][1])

    def datum(self, sample_index: int, sensor: str) -> DGPDatum:
        for key in self.samples[sample_index]['datum_keys']:
            d = self._by_key[key]
            if d['id']['name'] != sensor:
                continue
            (kind, body), = d['datum'].items()
            return DGPDatum(sensor=sensor, kind=kind, path=self.root / body['filename'],
                            timestamp=d['id']['timestamp'], T_world_sensor=_pose_from_dgp(body['pose']),
                            width=body.get('width'), height=body.get('height'))
        raise KeyError(f'sample {sample_index} has no datum for sensor {sensor!r}')

    @staticmethod
    def load_points(datum: DGPDatum) -> np.ndarray:
        """LiDAR sweep -> (N,4) float64 X, Y, Z, intensity in the LiDAR frame."""
        with np.load(datum.path) as z:
            pts = z['data']
        if pts.ndim != 2 or pts.shape[1] < 3:
            raise ValueError(f'{datum.path}: expected (N,3+) points, got {pts.shape}')
        return np.asarray(pts, dtype=np.float64)
