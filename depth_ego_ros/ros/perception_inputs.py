"""The perception node's input side: decoding images, finding each frame's intrinsics
(camera_info of the same stamp, else the newest, else camera_info.fallback_k, else the learned
K) and telling trajectory breaks apart. Bad input never stops the node: each problem is counted
per camera and kind (the diagnostics show the counts) and logged at most once per log_throttle
seconds per kind. No rclpy node here; message types only.
"""
from __future__ import annotations

from sensor_msgs.msg import CompressedImage

from depth_ego_ros.ros import conversions as conv
from depth_ego_ros.ros.perception_camera import CameraState
from depth_ego_ros.ros.perception_params import fallback_k
from depth_ego_ros.ros.runtime import KeyedThrottle

# Bad-input kinds counted in the diagnostics.
BAD_INPUTS = ('unsupported_encoding', 'malformed_image', 'corrupt_compressed', 'bad_camera_info',
              'missing_camera_info', 'camera_info_size_mismatch', 'bad_intrinsics', 'size_change',
              'time_jump_back', 'bad_speed', 'processing_error')
# intrinsics()' marker: no K from camera_info, the estimator uses its learned one (K=None).
LEARNED = 'learned'


class BadInputs:
    """``bad(cam, kind, text)``: count a bad input of ``kind`` on ``cam`` and log it at most once
    per ``period`` seconds per kind (and camera, with several cameras)."""

    def __init__(self, logger, period: float, multi: bool):
        self._logger = logger
        self._throttle = KeyedThrottle(period)
        self._multi = multi

    @property
    def period(self) -> float:
        return self._throttle.period

    @period.setter
    def period(self, value: float):
        self._throttle.period = value

    def __call__(self, cam: CameraState, kind: str, text: str, level: str = 'warning'):
        cam.counts[kind] += 1
        cam.bad_since_report[kind] += 1
        key = (cam.name, kind) if self._multi else kind
        if self._throttle.ready(key):
            more = self._throttle.take_suppressed(key)
            suffix = f' ({more} more since the last message)' if more else ''
            getattr(self._logger, level)(f'[{kind}] {cam.label}{text}{suffix}')


class FrameInputs:
    """Decoding and intrinsics of one camera's frames. ``params()`` gives the node's current
    parameters; ``learned``: the estimator has learned intrinsics (used when no camera_info)."""

    def __init__(self, params, bad: BadInputs, learned: bool):
        self._params = params
        self._bad = bad
        self.learned = learned

    def on_camera_info(self, cam: CameraState, msg):
        """The camera_info callback's work: keep it (an unusable one is counted, and kept as
        the newest so that frames do not use an older one)."""
        entry = cam.info.entry(msg)
        if entry[2] is not None:
            self._bad(cam, 'bad_camera_info',
                      f'camera_info on {cam.sub_info.topic_name} ignored: {entry[2]}')
        cam.info.store(entry)

    def fallback_k(self):
        """camera_info.fallback_k as K, or None (not set, or learned intrinsics replace it)."""
        if self.learned:
            return None
        return fallback_k(self._params())

    def decode(self, cam: CameraState, msg):
        """-> (uint8 image, its encoding) or (None, None) after counting the problem. Raw images
        stay in their encoding (the estimator converts to RGB on its device)."""
        try:
            if isinstance(msg, CompressedImage):
                return conv.compressed_to_rgb8(msg), 'rgb8'
            conv.require_color_encoding(msg.encoding)
            return conv.image_to_numpy(msg), msg.encoding
        except ValueError as exc:
            if isinstance(msg, CompressedImage):
                kind = 'corrupt_compressed'
            else:
                kind = 'malformed_image' if msg.encoding in conv.COLOR_ENCODINGS else 'unsupported_encoding'
            self._bad(cam, kind, f'frame dropped: {exc}')
            return None, None

    def intrinsics(self, cam: CameraState, width: int, height: int, stamp_ns: int):
        """-> (K, camera_info to republish or None) for an image of this size, or (None, None)
        after saying what is missing. With learned intrinsics and no usable camera_info:
        (LEARNED, None) (the estimator's learned K is used)."""
        have_fallback = self.fallback_k() is not None or self.learned
        info = cam.info.for_stamp(stamp_ns, have_fallback, self._params()['camera_info.sync_timeout'])
        if info is not None and info[1] is not None:
            msg, K = info[0], info[1]
            if (msg.width, msg.height) == (width, height):
                return K, msg
            if msg.width == 0 or msg.height == 0:       # size not filled in: K is for these images
                return K, None
            from depth_ego_ros.core.geometry import intrinsics_for_resize
            self._bad(cam, 'camera_info_size_mismatch',
                      f'camera_info is for {msg.width}x{msg.height} but images are '
                      f'{width}x{height}: scaling its K to the image size')
            return intrinsics_for_resize(K, (msg.width, msg.height), (width, height)), None
        fallback = self.fallback_k()
        if fallback is not None:
            return fallback, None
        if self.learned:                                # (an unusable camera_info was counted)
            return LEARNED, None
        topic = cam.sub_info.topic_name
        if info is None:
            self._bad(cam, 'missing_camera_info',
                      f'frame skipped: no camera_info received on {topic} yet and parameter '
                      'camera_info.fallback_k is not set (publish camera_info or set '
                      'camera_info.fallback_k:=[fx, fy, cx, cy])')
        else:
            self._bad(cam, 'missing_camera_info',
                      f'frame skipped: the last camera_info on {topic} was unusable ({info[2]}) '
                      'and camera_info.fallback_k is not set')
        return None, None

    @staticmethod
    def trajectory_break(cam: CameraState, width: int, height: int, stamp_ns: int):
        """(kind, why) when this frame cannot continue the camera's trajectory (the image size
        changed, time went backwards), else None."""
        if cam.last_size is not None and (width, height) != cam.last_size:
            return 'size_change', (f'image size changed from '
                                   f'{cam.last_size[0]}x{cam.last_size[1]} to {width}x{height}')
        if cam.last_stamp_ns is not None and stamp_ns < cam.last_stamp_ns:
            return 'time_jump_back', (f'time jumped backwards by '
                                      f'{(cam.last_stamp_ns - stamp_ns) * 1e-9:.3f} s (bag loop?)')
        return None


__all__ = ['BAD_INPUTS', 'LEARNED', 'BadInputs', 'FrameInputs']
