"""The :class:`Trajectory` container, its files (TUM, KITTI, EuRoC) and time association.

* A :class:`Trajectory` holds N poses ``T_world_cam`` (camera->world, 4x4 float64) and optional
  timestamps in seconds.
* :func:`read_trajectory` / :func:`write_trajectory` — TUM, KITTI (+ ``times.txt``) and EuRoC csv.
* :func:`associate` — for every stamp of the *shorter* trajectory, the nearest stamp of the longer
  one, accepted when ``|dt| <= max_diff`` (evo ``sync.associate_trajectories``).
* :func:`interpolate_trajectory` — poses at given stamps (linear translation, geodesic rotation).

The metrics on trajectories are in :mod:`.trajectory_metrics`; :mod:`.trajectory` exports both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.geometry import (interpolate_pose, matrix_to_quat_wxyz, matrix_to_quat_xyzw,
                             pose_from_tq_xyzw, quat_wxyz_to_matrix)

__all__ = [
    'Trajectory', 'TrajectoryError', 'path_length', 'read_tum', 'write_tum', 'read_kitti',
    'write_kitti', 'read_euroc_csv', 'write_euroc_csv', 'read_trajectory', 'write_trajectory',
    'associate', 'associate_trajectories', 'interpolate_trajectory',
]

class TrajectoryError(ValueError):
    """Invalid trajectory data or options (bad file, too few poses, no matches...)."""


# ----------------------------------------------------------------------------------------------
# container
# ----------------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """N poses (camera->world, ``poses[i] = T_world_cam_i``) with optional stamps (seconds)."""
    poses: np.ndarray
    stamps: np.ndarray | None = None

    def __post_init__(self):
        self.poses = np.asarray(self.poses, dtype=np.float64)
        if self.poses.ndim != 3 or self.poses.shape[1:] != (4, 4):
            raise TrajectoryError(f'poses must be (N,4,4), got {self.poses.shape}')
        if not np.all(np.isfinite(self.poses)):
            raise TrajectoryError('poses contain non-finite values')
        if self.stamps is not None:
            self.stamps = np.asarray(self.stamps, dtype=np.float64).reshape(-1)
            if self.stamps.shape[0] != self.poses.shape[0]:
                raise TrajectoryError(f'{self.stamps.shape[0]} stamps for {self.poses.shape[0]} poses')

    def __len__(self) -> int:
        return self.poses.shape[0]

    @property
    def positions(self) -> np.ndarray:
        """(N,3) camera centres in the world frame."""
        return self.poses[:, :3, 3]

    def subset(self, ids) -> 'Trajectory':
        ids = np.asarray(ids, dtype=np.int64)
        return Trajectory(self.poses[ids].copy(), None if self.stamps is None else self.stamps[ids].copy())

    def copy(self) -> 'Trajectory':
        return self.subset(np.arange(len(self)))

    def transformed(self, T) -> 'Trajectory':
        """Left-multiply every pose by T (a change of world frame): ``T @ poses[i]``."""
        return Trajectory(np.asarray(T, dtype=np.float64) @ self.poses, self.stamps)

    def scaled(self, s: float) -> 'Trajectory':
        """Scale the translations (positions) by s about the world origin."""
        poses = self.poses.copy()
        poses[:, :3, 3] *= s
        return Trajectory(poses, self.stamps)

    @classmethod
    def from_relative(cls, rel, stamps=None) -> 'Trajectory':
        """Chain relative poses ``rel[i] = T_i_(i+1)`` (first pose identity)."""
        from ..core.geometry import chain_poses
        return cls(chain_poses(np.asarray(rel, dtype=np.float64)), stamps)


def path_length(traj_or_positions) -> float:
    """Length of the polyline through the positions (metres)."""
    p = traj_or_positions.positions if isinstance(traj_or_positions, Trajectory) else np.asarray(traj_or_positions)
    return float(np.sum(np.linalg.norm(np.diff(p, axis=0), axis=1))) if len(p) > 1 else 0.0


# ----------------------------------------------------------------------------------------------
# file formats
# ----------------------------------------------------------------------------------------------
def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_rows(path, delimiter=None) -> np.ndarray:
    rows = []
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith('#') or line.startswith('%'):
            continue
        parts = line.replace(',', ' ').split() if delimiter is None else line.split(delimiter)
        try:
            rows.append([float(x) for x in parts if x.strip() != ''])
        except ValueError:
            if not rows and not any(_is_number(x) for x in parts):  # a header line without '#'
                continue
            raise TrajectoryError(f'{path}:{n}: not numeric: {line[:80]!r}') from None
    if not rows:
        raise TrajectoryError(f'{path}: no poses')
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise TrajectoryError(f'{path}: rows have different numbers of columns {sorted(widths)}')
    return np.array(rows, dtype=np.float64)


def read_tum(path) -> Trajectory:
    """TUM format: ``timestamp tx ty tz qx qy qz qw`` per line (quaternion x,y,z,w; '#' comments)."""
    m = _read_rows(path)
    if m.shape[1] != 8:
        raise TrajectoryError(f'{path}: TUM rows need 8 columns, got {m.shape[1]}')
    return Trajectory(pose_from_tq_xyzw(m[:, 1:4], m[:, 4:8]), m[:, 0])


def write_tum(path, traj: Trajectory, stamps=None, precision: int = 9) -> None:
    """Write TUM format. Without stamps (neither given nor in traj) the frame index is written."""
    st = stamps if stamps is not None else traj.stamps
    st = np.arange(len(traj), dtype=np.float64) if st is None else np.asarray(st, dtype=np.float64)
    q = matrix_to_quat_xyzw(traj.poses[:, :3, :3]).reshape(-1, 4)
    t = traj.positions
    with open(path, 'w') as f:
        for i in range(len(traj)):
            vals = ' '.join(f'{v:.{precision}f}' for v in (*t[i], *q[i]))
            f.write(f'{st[i]:.6f} {vals}\n')


def read_kitti(path, stamps=None) -> Trajectory:
    """KITTI odometry format: 12 numbers per line, the row-major 3x4 ``[R|t]`` (camera->world).
    ``stamps``: optional (N,) array or path of a KITTI ``times.txt``."""
    m = _read_rows(path)
    if m.shape[1] != 12:
        raise TrajectoryError(f'{path}: KITTI rows need 12 columns, got {m.shape[1]}')
    poses = np.zeros((m.shape[0], 4, 4))
    poses[:, :3, :] = m.reshape(-1, 3, 4)
    poses[:, 3, 3] = 1.0
    if stamps is not None and not isinstance(stamps, np.ndarray) and isinstance(stamps, (str, Path)):
        stamps = np.loadtxt(stamps, dtype=np.float64, ndmin=1)
    return Trajectory(poses, stamps)


def write_kitti(path, traj: Trajectory, precision: int = 9) -> None:
    """Write KITTI format (12 numbers per line, row-major 3x4, scientific notation)."""
    rows = traj.poses[:, :3, :].reshape(-1, 12)
    np.savetxt(path, rows, fmt=f'%.{precision}e', delimiter=' ')


def read_euroc_csv(path) -> Trajectory:
    """EuRoC ground-truth csv: ``timestamp[ns], px, py, pz, qw, qx, qy, qz, ...`` (extra columns
    ignored; quaternion w first; stamps converted to seconds)."""
    m = _read_rows(path, delimiter=',')
    if m.shape[1] < 8:
        raise TrajectoryError(f'{path}: EuRoC rows need at least 8 columns, got {m.shape[1]}')
    poses = np.zeros((m.shape[0], 4, 4))
    poses[:, :3, :3] = quat_wxyz_to_matrix(m[:, 4:8])
    poses[:, :3, 3] = m[:, 1:4]
    poses[:, 3, 3] = 1.0
    return Trajectory(poses, m[:, 0] / 1e9)


def write_euroc_csv(path, traj: Trajectory) -> None:
    """Write the first 8 EuRoC columns (stamps in integer nanoseconds, quaternion w first)."""
    if traj.stamps is None:
        raise TrajectoryError('EuRoC format needs timestamps')
    q = matrix_to_quat_wxyz(traj.poses[:, :3, :3]).reshape(-1, 4)
    t = traj.positions
    with open(path, 'w') as f:
        f.write('#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z []\n')
        for i in range(len(traj)):
            ns = int(round(traj.stamps[i] * 1e9))
            f.write(f'{ns},' + ','.join(f'{v:.9f}' for v in (*t[i], *q[i])) + '\n')


def read_trajectory(path, fmt: str = 'auto', stamps=None) -> Trajectory:
    """Read 'tum' | 'kitti' | 'euroc' (``auto``: by extension and column count)."""
    path = Path(path)
    if fmt == 'auto':
        if path.suffix.lower() == '.csv':
            fmt = 'euroc'
        else:
            ncol = _read_rows(path).shape[1]
            fmt = {8: 'tum', 12: 'kitti'}.get(ncol)
            if fmt is None:
                raise TrajectoryError(f'{path}: cannot tell the format from {ncol} columns '
                                      '(TUM has 8, KITTI 12; EuRoC files end in .csv)')
    if fmt == 'tum':
        return read_tum(path)
    if fmt == 'kitti':
        return read_kitti(path, stamps)
    if fmt == 'euroc':
        return read_euroc_csv(path)
    raise TrajectoryError(f'unknown trajectory format {fmt!r} (tum, kitti, euroc)')


def write_trajectory(path, traj: Trajectory, fmt: str) -> None:
    {'tum': write_tum, 'kitti': write_kitti, 'euroc': write_euroc_csv}[fmt](path, traj)


# ----------------------------------------------------------------------------------------------
# time association / interpolation
# ----------------------------------------------------------------------------------------------
def associate(stamps_a, stamps_b, max_diff: float = 0.01, offset_b: float = 0.0):
    """Match two lists of timestamps, evo-style.

    For every stamp of the shorter list, the nearest stamp of the longer list (``stamps_b`` shifted
    by ``offset_b``) is taken when ``|dt| <= max_diff`` (ties: the earlier index). A stamp of the
    longer list may be used twice (as in evo).
    Returns (ids_a, ids_b): int arrays of equal length, increasing in the shorter list's order.
    """
    a = np.asarray(stamps_a, dtype=np.float64).reshape(-1)
    b = np.asarray(stamps_b, dtype=np.float64).reshape(-1) + offset_b
    if a.size == 0 or b.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    b_longer = b.size > a.size
    short, long_ = (a, b) if b_longer else (b, a)
    order = np.argsort(long_, kind='stable')
    ls = long_[order]
    pos = np.searchsorted(ls, short)
    lo = np.clip(pos - 1, 0, ls.size - 1)
    hi = np.clip(pos, 0, ls.size - 1)
    d_lo = np.abs(ls[lo] - short)
    d_hi = np.abs(ls[hi] - short)
    # nearest; on equal distance prefer the lower original index (np.argmin semantics)
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (order[hi] < order[lo]))
    best = np.where(pick_hi, hi, lo)
    dist = np.where(pick_hi, d_hi, d_lo)
    ok = dist <= max_diff
    ids_short = np.nonzero(ok)[0]
    ids_long = order[best[ok]]
    return (ids_short, ids_long) if b_longer else (ids_long, ids_short)


def associate_trajectories(ref: Trajectory, est: Trajectory, max_diff: float = 0.01,
                           offset_est: float = 0.0) -> tuple[Trajectory, Trajectory]:
    """Reduce both trajectories to their associated poses (see :func:`associate`).
    Raises TrajectoryError when a trajectory has no stamps or nothing matches."""
    if ref.stamps is None or est.stamps is None:
        raise TrajectoryError('time association needs timestamps on both trajectories')
    ia, ib = associate(ref.stamps, est.stamps, max_diff, offset_est)
    if ia.size == 0:
        raise TrajectoryError(
            f'no matching timestamps within {max_diff} s (reference {ref.stamps[0]:.3f}..{ref.stamps[-1]:.3f}, '
            f'estimate {est.stamps[0]:.3f}..{est.stamps[-1]:.3f}, offset {offset_est} s)')
    return ref.subset(ia), est.subset(ib)


def interpolate_trajectory(traj: Trajectory, query_stamps, max_gap: float | None = None) -> Trajectory:
    """Poses at ``query_stamps`` by interpolation between the neighbouring poses (linear translation,
    geodesic rotation). Query stamps outside the trajectory's time span, or (with ``max_gap``) in a
    gap longer than max_gap seconds, raise TrajectoryError."""
    if traj.stamps is None:
        raise TrajectoryError('interpolation needs timestamps')
    st = traj.stamps
    if np.any(np.diff(st) <= 0):
        order = np.argsort(st, kind='stable')
        traj = traj.subset(order)
        st = traj.stamps
    q = np.asarray(query_stamps, dtype=np.float64).reshape(-1)
    out = np.empty((q.size, 4, 4))
    for k, t in enumerate(q):
        if t < st[0] or t > st[-1]:
            raise TrajectoryError(f'stamp {t:.6f} outside the trajectory span {st[0]:.6f}..{st[-1]:.6f}')
        j = int(np.searchsorted(st, t))
        if st[min(j, st.size - 1)] == t:
            out[k] = traj.poses[j]
            continue
        i0, i1 = j - 1, j
        gap = st[i1] - st[i0]
        if max_gap is not None and gap > max_gap:
            raise TrajectoryError(f'stamp {t:.6f} falls in a {gap:.3f} s gap (max {max_gap} s)')
        out[k] = interpolate_pose(traj.poses[i0], traj.poses[i1], (t - st[i0]) / gap)
    return Trajectory(out, q)

