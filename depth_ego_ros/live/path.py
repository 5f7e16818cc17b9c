"""The trajectory as a path: odometry poses kept in order, thinned by distance, bounded in length.

``PathAccumulator.add(stamp_ns, frame, position, orientation)`` keeps a pose when it moved at
least ``min_step`` metres (or turned ``min_turn`` radians) from the last kept one; beyond
``max_poses`` every other old pose is dropped (the path keeps its whole extent at a coarser
step). A jump back in time or a new odometry frame starts a new path (the node restarted its
trajectory).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class PathAccumulator:
    min_step: float = 0.01          # metres between kept poses
    min_turn: float = 0.02          # radians between kept poses
    max_poses: int = 10000
    frame_id: str = ''
    poses: list = field(default_factory=list)    # (stamp_ns, (x, y, z), (x, y, z, w))
    restarts: int = 0

    def add(self, stamp_ns: int, frame_id: str, position, orientation) -> bool:
        """Offer one pose; True when it was kept."""
        position = tuple(float(v) for v in position)
        orientation = tuple(float(v) for v in orientation)
        if not all(math.isfinite(v) for v in position + orientation):
            return False
        if self.poses and (frame_id != self.frame_id or stamp_ns < self.poses[-1][0]):
            self.poses.clear()
            self.restarts += 1
        self.frame_id = frame_id
        if self.poses:
            _, p0, q0 = self.poses[-1]
            if (math.dist(p0, position) < self.min_step
                    and _angle_between(q0, orientation) < self.min_turn):
                return False
        self.poses.append((int(stamp_ns), position, orientation))
        if len(self.poses) > self.max_poses:
            # thin the older half, keep the newest half at full resolution
            half = len(self.poses) // 2
            self.poses = self.poses[:half:2] + self.poses[half:]
        return True

    def positions(self):
        """[(x, y, z), ...] of the kept poses."""
        return [p for _, p, _ in self.poses]

    def length(self) -> float:
        pts = self.positions()
        return sum(math.dist(a, b) for a, b in zip(pts, pts[1:]))


def _angle_between(q0, q1) -> float:
    """Rotation angle between two unit quaternions (x, y, z, w)."""
    dot = abs(sum(a * b for a, b in zip(q0, q1)))
    return 2.0 * math.acos(min(1.0, dot))


class RateLimiter:
    """``ready(now)`` is True at most ``max_rate`` times per second (0 = always)."""

    def __init__(self, max_rate: float):
        self.period = 1.0 / max_rate if max_rate > 0 else 0.0
        self._next = -math.inf
        self.passed = self.skipped = 0

    def ready(self, now: float) -> bool:
        if now >= self._next:
            # a steady period; after a pause (or at the start), count again from now
            base = now if now - self._next > self.period else self._next
            self._next = base + self.period
            self.passed += 1
            return True
        self.skipped += 1
        return False


__all__ = ['PathAccumulator', 'RateLimiter']
