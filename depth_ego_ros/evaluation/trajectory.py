"""Trajectory I/O, time association, alignment and the field's trajectory metrics.

Everything follows the semantics of ``evo`` (github.com/MichaelGrupp/evo, checked against
evo 1.38.1 reference values in the test suite) unless a function says otherwise:

* A :class:`Trajectory` holds N poses ``T_world_cam`` (camera->world, 4x4 float64) and optional
  timestamps in seconds.
* :func:`associate` — for every stamp of the *shorter* trajectory, the nearest stamp of the longer
  one, accepted when ``|dt| <= max_diff`` (evo ``sync.associate_trajectories``).
* :func:`umeyama` / :func:`align` — least-squares SE(3), Sim(3) or scale-only alignment of the
  estimate's positions onto the reference's (Umeyama 1991; ``evo`` ``traj.align``).
* :func:`ape` — absolute pose error after alignment; the translation part is the ATE.
* :func:`rpe` — relative pose error ``E = inv(inv(Q_i) Q_j) inv(P_i) P_j`` over index pairs (i, j)
  picked by a delta in frames or metres (path length), consecutive or all pairs.
* :func:`snippet_ate` — monodepth2's 5-frame-snippet ATE (a different, local metric).
* :func:`error_stats` — rmse, mean, median, std (population), min, max, sse.

Formulas and conventions are documented in docs/evaluation_metrics.md.

The container, files and association live in :mod:`.trajectory_io`, the alignment and metrics in
:mod:`.trajectory_metrics`; this module is the one place callers import them from.
"""
from __future__ import annotations

from .trajectory_io import (Trajectory, TrajectoryError, associate, associate_trajectories,
                            interpolate_trajectory, path_length, read_euroc_csv, read_kitti,
                            read_trajectory, read_tum, write_euroc_csv, write_kitti,
                            write_trajectory, write_tum)
from .trajectory_metrics import (Alignment, ErrorResult, align, ape, compute_ate_snippet,
                                 error_stats, pair_indices, rpe, snippet_ate, umeyama)

__all__ = [
    'Trajectory', 'TrajectoryError', 'read_tum', 'write_tum', 'read_kitti', 'write_kitti',
    'read_euroc_csv', 'write_euroc_csv', 'read_trajectory', 'write_trajectory',
    'associate', 'associate_trajectories', 'interpolate_trajectory',
    'umeyama', 'align', 'Alignment', 'error_stats', 'ErrorResult', 'ape', 'rpe', 'pair_indices',
    'snippet_ate', 'compute_ate_snippet', 'path_length',
]
