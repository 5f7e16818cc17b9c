"""What the perception node keeps per camera: counters, statistics, trajectory state and the
camera_info cache that pairs each image with the camera_info of the same stamp. No rclpy here
(the topics are attached by the node).
"""
from __future__ import annotations

import collections
import threading

from depth_ego_ros.ros import conversions as conv
from depth_ego_ros.ros.runtime import RateMeter, Stats


class CameraInfoCache:
    """The newest camera_info and the last few by stamp, so that an image can be paired with the
    camera_info of its own stamp. Filled by the camera_info callback, read by the worker."""

    KEEP = 30

    def __init__(self):
        self.latest = None                              # newest (msg, K or None, error or None)
        self._by_stamp = collections.OrderedDict()      # stamp ns -> entry, the last KEEP
        self._cond = threading.Condition()
        self.paired = False                             # camera_info stamps match image stamps

    @staticmethod
    def entry(msg):
        """(msg, K, None) of a received camera_info, or (msg, None, why its K is unusable)."""
        try:
            return msg, conv.camera_info_to_k(msg), None
        except ValueError as exc:
            return msg, None, str(exc)

    def store(self, entry):
        """Keep an :meth:`entry` as the newest and under its stamp; wakes a waiting worker."""
        with self._cond:
            self.latest = entry
            self._by_stamp[conv.stamp_to_ns(entry[0].header.stamp)] = entry
            while len(self._by_stamp) > self.KEEP:
                self._by_stamp.popitem(last=False)
            self._cond.notify_all()

    def for_stamp(self, stamp_ns: int, have_fallback: bool, timeout: float):
        """The entry with the image's stamp when there is one, else the newest (or None). Waits
        up to ``timeout`` for it where it is expected: once stamps have matched, or while there
        is neither a camera_info nor a fallback."""
        with self._cond:
            expect = self.paired or (self.latest is None and not have_fallback)
            if expect:
                self._cond.wait_for(lambda: stamp_ns in self._by_stamp, timeout)
            entry = self._by_stamp.get(stamp_ns)
            if entry is not None:
                self.paired = True
                return entry
            return self.latest


class CameraState:
    """Everything one camera owns: its topics (set by the node), latest-frame slot key,
    camera_info cache, pose chain, counters and statistics. ``name`` None = the single-camera
    mode (topics without a prefix, estimator camera_id None)."""

    def __init__(self, name, chain):
        self.name = name
        self.cid = name                                 # estimator camera_id
        self.prefix = f'{name}/' if name else ''
        self.label = f'[{name}] ' if name else ''
        self.chain = chain
        self.counts = collections.Counter()             # bad inputs, published outputs, frames
        self.info = CameraInfoCache()
        self.in_rate, self.out_rate = RateMeter(), RateMeter()
        self.latency, self.stamp_latency, self.net_ms = Stats(), Stats(), Stats()
        self.decode_ms, self.outputs_ms = Stats(), Stats()
        self.last_size = None
        self.last_stamp_ns = None
        self.pose_active = False
        self.static_frame = None
        self.bad_since_report = collections.Counter()
        self.last_input = None
        # topics, attached by the node
        self.sub_info = self.sub_image = None
        self.pub_depth = self.pub_depth_info = self.pub_colored = self.pub_points = None
        self.pub_odom = self.pub_exp = None

    @property
    def camera_info(self):
        """The newest camera_info entry (msg, K or None, error or None), or None."""
        return self.info.latest


class Prepared:
    """A decoded frame with its intrinsics, ready for the networks."""
    __slots__ = ('cam', 'msg', 't_recv', 'image', 'encoding', 'K', 'info_msg', 'stamp_ns', 'dt',
                 'want', 'want_pose')

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


__all__ = ['CameraInfoCache', 'CameraState', 'Prepared']
