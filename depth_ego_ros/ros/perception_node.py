"""depth_ego_node: one camera in -> depth image, coloured depth, point cloud, odometry and TF out.

Topics (relative names resolve in the node's namespace; remap them freely)
  in   image               sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)   image_transport=raw
  in   image/compressed    sensor_msgs/CompressedImage (jpeg, png)        image_transport=compressed
  in   camera_info         sensor_msgs/CameraInfo (intrinsics; fallback: camera_info.fallback_k, or
                           with learned_intrinsics the learned K until a camera_info arrives)
  in   <scale.speed_topic> nav_msgs/Odometry | geometry_msgs/TwistStamped   (scale.mode=speed only)
  out  depth               sensor_msgs/Image 32FC1, metres, camera resolution, NaN = invalid
  out  depth/camera_info   sensor_msgs/CameraInfo matching ``depth``
  out  depth/colored       sensor_msgs/Image rgb8, colour-mapped inverse depth
  out  points              sensor_msgs/PointCloud2 x, y, z, rgb (optical frame)
  out  odom                nav_msgs/Odometry (child: frames.base, or the camera frame)
  out  explainability      sensor_msgs/Image mono8, network resolution (pose_model posexp only)
  out  /tf, /tf_static     tf2_msgs/TFMessage: odom -> child; optional static base -> camera
  out  /diagnostics        diagnostic_msgs/DiagnosticArray
Every image output carries the input image's header (stamp and optical frame).

Runtime model: subscription callbacks only store the newest frame in a one-item slot (a newer
frame replaces an unprocessed one and counts as dropped); a single worker thread decodes, runs the
estimator, builds the outputs that have subscribers and publishes them. Bad input never stops the
node: each kind of problem gets one throttled log line and a counter in the diagnostics.

Multi-camera mode (parameter ``cameras: [front, left, ...]``): one node process serves every
camera. Each camera <cam> has its own subscriptions <cam>/image (or <cam>/image/compressed) and
<cam>/camera_info, its own latest-frame slot and drop counter, pose chain, camera_info pairing,
bad-input counters and diagnostics status ("<node>: perception <cam>"), and publishes <cam>/depth,
<cam>/depth/camera_info, <cam>/depth/colored, <cam>/points and <cam>/odom, every message stamped
with that camera's own image header; odometry and TF go frames.camera_odom ('{camera}_odom') ->
the camera's optical frame. The worker takes every waiting frame (after waiting up to
``batch_window`` s for the other recently active cameras) and runs them through the networks as
one ``Estimator.infer_batch`` call (one depth and one pose network call). A bad frame drops only
itself: decoding and intrinsics are checked per camera, and a batch the estimator refuses is
retried frame by frame.
"""
from __future__ import annotations

import collections
import math
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header

from depth_ego_ros.core.names import MODELS, POSE_MODELS   # torch-free
from depth_ego_ros.ros import conversions as conv
from depth_ego_ros.ros import qos
from depth_ego_ros.ros.node_main import run_node
from depth_ego_ros.ros.params import Param, declare, on_set_validator
from depth_ego_ros.ros.runtime import KeyedSlots, KeyedThrottle, LatestSlot, RateMeter, Stats
from depth_ego_ros.ros.tf_broadcast import TfBroadcaster

NODE_NAME = 'depth_ego_node'
DEFAULT_CAMERA_FRAME = 'camera_optical_frame'
_OPTICAL_RPY = [-math.pi / 2, 0.0, -math.pi / 2]   # base (x fwd, z up) -> optical (z fwd, y down)




def _is_cuda_n(v) -> bool:
    return isinstance(v, str) and v.startswith('cuda:') and v[5:].isdigit()


# Parameters: the table config/depth_ego.yaml documents (test_perception_node_units checks that
# both agree). read_only = start-up only; the others can be changed with `ros2 param set`.
PARAMS = [
    # -- network / estimator ------------------------------------------------------------------
    Param('checkpoint', '', 'monodepth2-layout checkpoint directory (encoder.pth, depth.pth, '
          'pose_encoder.pth, pose.pth); empty = random weights (meaningless output, a warning)',
          read_only=True),
    Param('model', 'resnet18', 'depth network: resnet18 / resnet50 (monodepth2) or packnet01, '
          'packnet01-w0.5, packnet01-w0.25 (PackNet01; a PackNet-SfM .ckpt file also works as '
          'checkpoint)', choices=MODELS, read_only=True),
    Param('pose_model', 'monodepth2', 'pose network: monodepth2 (ResNet pose net) or posexp '
          '(SfMLearner PoseExpNet, also gives the explainability output)', choices=POSE_MODELS,
          read_only=True),
    Param('learned_intrinsics', False, 'use the intrinsics learned by the pose network\'s head '
          'when no camera_info has been received (frames then need no camera_info; a valid '
          'camera_info always wins; camera_info.fallback_k is ignored)', read_only=True),
    Param('width', 640, 'network input width in pixels (multiple of 32); images of any size are '
          'resized to it, outputs keep the camera resolution', range=(32, 4096, 32), read_only=True),
    Param('height', 192, 'network input height in pixels (multiple of 32)', range=(32, 4096, 32),
          read_only=True),
    Param('device', 'auto', 'compute device: auto (CUDA when available), cpu, cuda, cuda:N',
          choices=('auto', 'cpu', 'cuda'), pattern_ok=_is_cuda_n, pattern_help='or cuda:N',
          read_only=True),
    Param('precision', 'fp32', 'network precision (fp16 needs CUDA; bf16 on CUDA or CPUs with '
          'bf16 units)', choices=('fp32', 'fp16', 'bf16'), read_only=True),
    Param('backend', 'auto', 'inference backend: auto = ONNX Runtime on the CPU, torch on CUDA, '
          'the exported format\'s runtime with exported_model; tensorrt needs exported_model',
          choices=('auto', 'torch', 'torchscript', 'onnxruntime', 'tensorrt'), read_only=True),
    Param('exported_model', '', 'directory written by `depth-ego export` (ONNX / TorchScript / '
          'TensorRT) to run instead of checkpoint; empty = none', read_only=True),
    Param('num_threads', 0, 'CPU threads for the networks (0 = library default)', range=(0, 256),
          read_only=True),
    Param('min_depth', 0.1, 'smallest depth the network can output (network units)',
          range=(1e-3, 1e3), read_only=True),
    Param('max_depth', 100.0, 'largest depth the network can output (network units)',
          range=(1e-2, 1e5), read_only=True),
    Param('scale.mode', 'none', 'metric scale: none = the network\'s own units, relative = every '
          'depth image divided by its median (median 1), fixed = times scale.factor, '
          'camera_height = ground plane lies scale.camera_height below the camera, speed = from the '
          'speed topic', choices=('none', 'relative', 'fixed', 'camera_height', 'speed'),
          read_only=True),
    Param('scale.factor', 1.0, 'depth multiplier for scale.mode fixed', range=(1e-6, 1e6),
          read_only=True),
    Param('scale.camera_height', 1.0, 'camera height above the ground in metres (scale.mode '
          'camera_height)', range=(0.01, 100.0), read_only=True),
    Param('scale.speed_topic', 'speed', 'topic giving the platform speed (scale.mode speed)',
          read_only=True),
    Param('scale.speed_type', 'odometry', 'message type of scale.speed_topic',
          choices=('odometry', 'twist_stamped'), read_only=True),
    # -- input -----------------------------------------------------------------------------------
    Param('image_transport', 'raw', 'raw = subscribe to image (sensor_msgs/Image); compressed = '
          'subscribe to image/compressed (jpeg/png)', choices=('raw', 'compressed'), read_only=True),
    Param('qos.input', 'sensor_data', 'QoS of the image and camera_info subscriptions',
          choices=qos.QOS_NAMES, read_only=True),
    Param('qos.input_depth', 1, 'history depth of the input subscriptions', range=(1, 100),
          read_only=True),
    Param('qos.output', 'reliable', 'QoS of the output publishers (reliable also serves '
          'best-effort subscribers)', choices=qos.QOS_NAMES, read_only=True),
    Param('qos.output_depth', 2, 'history depth of the output publishers', range=(1, 100),
          read_only=True),
    Param('camera_info.fallback_k', [0.0, 0.0, 0.0, 0.0], 'intrinsics [fx, fy, cx, cy] in pixels '
          'of the incoming images, used while no valid camera_info is available; zeros = none '
          '(frames wait for camera_info)', length=4),
    Param('camera_info.sync_timeout', 0.1, 'seconds a frame waits for the camera_info with its '
          'own stamp (once camera_info and image stamps have matched, or while no camera_info '
          'and no fallback exist); otherwise the newest camera_info is used', range=(0.0, 5.0)),
    # -- frames ----------------------------------------------------------------------------------
    Param('frames.odom', 'odom', 'fixed frame of the odometry', read_only=True),
    Param('frames.base', '', 'robot body frame: odometry and TF go odom -> base (using the static '
          'base -> camera transform below); empty = odom -> camera frame', read_only=True),
    Param('frames.camera', '', 'camera optical frame; empty = the frame_id of the images '
          f'(or {DEFAULT_CAMERA_FRAME} when that is empty)', read_only=True),
    Param('static_transform.publish', False, 'publish the base -> camera transform below on '
          '/tf_static (needs frames.base)', read_only=True),
    Param('static_transform.xyz', [0.0, 0.0, 0.0], 'camera position in the base frame, metres',
          length=3, read_only=True),
    Param('static_transform.rpy', list(_OPTICAL_RPY), 'camera optical frame orientation in the '
          'base frame, roll/pitch/yaw radians (default: camera looking along base x)', length=3,
          read_only=True),
    # -- outputs ---------------------------------------------------------------------------------
    Param('publish.depth', True, 'publish depth and depth/camera_info'),
    Param('publish.colored', True, 'publish depth/colored'),
    Param('publish.points', True, 'publish points'),
    Param('publish.odom', True, 'publish odom'),
    Param('publish.tf', True, 'publish the odom -> base/camera transform on /tf'),
    Param('publish.explainability', True, 'publish explainability (mono8 PoseExpNet mask at '
          'network resolution, 255 = explained by the rigid warp; pose_model posexp only)'),
    Param('points.stride', 4, 'use every stride-th pixel (rows and columns) for the point cloud',
          range=(1, 64)),
    Param('points.min_range', 0.0, 'drop points closer than this (metres from the camera)',
          range=(0.0, 1e4)),
    Param('points.max_range', 0.0, 'drop points farther than this; 0 = keep all', range=(0.0, 1e5)),
    Param('colored.percentile', 95.0, 'inverse-depth percentile mapped to the brightest colour',
          range=(50.0, 100.0)),
    Param('odom.translation_noise', 0.1, 'std of each step translation as a fraction of its '
          'length (fills the odometry covariances)', range=(0.0, 10.0)),
    Param('odom.rotation_noise', 0.1, 'std of each step rotation as a fraction of its angle',
          range=(0.0, 10.0)),
    # -- diagnostics -----------------------------------------------------------------------------
    Param('diagnostics.period', 1.0, 'seconds between /diagnostics messages', range=(0.1, 60.0),
          read_only=True),
    Param('log_throttle', 5.0, 'seconds between two log lines about the same kind of problem',
          range=(0.0, 3600.0)),    # -- multi-camera --------------------------------------------------------------------------
    Param('cameras', [], 'camera namespaces served by this one node, e.g. [front, left]: each '
          'gets <cam>/image, <cam>/camera_info in and <cam>/depth, <cam>/depth/camera_info, '
          '<cam>/depth/colored, <cam>/points, <cam>/odom out, and frames waiting together go '
          'through the networks as one batch; empty = one camera on image, camera_info',
          read_only=True),
    Param('batch_window', 0.005, 'multi-camera: seconds the worker waits, once a frame is '
          'waiting, for the other recently active cameras\' frames to join the batch',
          range=(0.0, 1.0)),
    Param('frames.camera_odom', '{camera}_odom', 'multi-camera: fixed odometry frame of each '
          'camera ({camera} = its namespace); frames.odom/base/camera apply to the single-camera '
          'mode only', read_only=True),
    # -- online refinement (core/online_refinement.py, docs/online_refinement.md) -----------------
    Param('online_refinement.enabled', False, 'test-time adaptation: a background thread '
          'fine-tunes a copy of the depth and pose networks on a sliding window of recent frames '
          '(self-supervised loss) and swaps the weights in when the window loss fell; monodepth2 '
          'ResNet networks only', read_only=True),
    Param('online_refinement.window', 8, 'frames kept in the sliding window (per camera)',
          range=(3, 64), read_only=True),
    Param('online_refinement.steps', 3, 'optimiser steps per round', range=(1, 100)),
    Param('online_refinement.batch', 2, 'frame triplets per optimiser step', range=(1, 16)),
    Param('online_refinement.learning_rate', 1e-4, 'Adam learning rate of the refinement',
          range=(1e-8, 0.1)),
    Param('online_refinement.interval', 1.0, 'seconds between the starts of two rounds',
          range=(0.0, 3600.0)),
    Param('online_refinement.max_share', 0.3, 'the refiner is busy at most this fraction of '
          'wall time (it sleeps in between)', range=(0.01, 1.0)),
    Param('online_refinement.threads', 1, 'CPU threads of the refiner', range=(1, 64),
          read_only=True),
    Param('online_refinement.networks', 'both', 'networks adapted: both, depth or pose',
          choices=('both', 'depth', 'pose')),
    Param('online_refinement.reset_after_rejects', 0, 'restore the original weights after this '
          'many rejected rounds in a row (0 = never)', range=(0, 1000)),
    Param('online_refinement.frame_stride', 1, 'keep every n-th processed frame in the window',
          range=(1, 100), read_only=True),
    Param('online_refinement.save_dir', '', 'directory where the refined weights are written '
          '(monodepth2 layout) when the node shuts down; empty = not saved', read_only=True),
]
# node parameter -> RefinerConfig field (changeable at run time unless read_only)
REFINER_PARAMS = {'window': 'window', 'steps': 'steps', 'batch': 'batch',
                  'learning_rate': 'learning_rate', 'interval': 'interval',
                  'max_share': 'max_share', 'threads': 'threads', 'networks': 'networks',
                  'reset_after_rejects': 'reset_after_rejects', 'frame_stride': 'frame_stride'}

# Bad-input kinds counted in the diagnostics.
BAD_INPUTS = ('unsupported_encoding', 'malformed_image', 'corrupt_compressed', 'bad_camera_info',
              'missing_camera_info', 'camera_info_size_mismatch', 'bad_intrinsics', 'size_change',
              'time_jump_back', 'bad_speed', 'processing_error')
# _intrinsics' marker: no K from camera_info, the estimator uses its learned one (K=None).
LEARNED = 'learned'
OUTPUTS = ('depth', 'colored', 'points', 'odom', 'tf', 'explainability')


def _rpy_to_matrix(xyz, rpy) -> np.ndarray:
    """Fixed-axis roll, pitch, yaw (ROS convention: R = Rz(yaw) Ry(pitch) Rx(roll))."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    T = np.eye(4)
    T[:3, :3] = [[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                 [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                 [-sp, cp * sr, cp * cr]]
    T[:3, 3] = xyz
    return T


class _Camera:
    """Everything one camera owns: its topics, latest-frame slot key, camera_info cache, pose
    chain, counters and statistics. ``name`` None = the single-camera mode (topics without a
    prefix, estimator camera_id None)."""

    def __init__(self, name, chain):
        self.name = name
        self.cid = name                                 # estimator camera_id
        self.prefix = f'{name}/' if name else ''
        self.label = f'[{name}] ' if name else ''
        self.chain = chain
        self.counts = collections.Counter()             # bad inputs, published outputs, frames
        self.camera_info = None                         # newest (msg, K or None, error or None)
        self.infos = collections.OrderedDict()          # stamp ns -> entry, the last few
        self.info_cond = threading.Condition()
        self.info_paired = False                        # camera_info stamps match image stamps
        self.in_rate, self.out_rate = RateMeter(), RateMeter()
        self.latency, self.stamp_latency, self.net_ms = Stats(), Stats(), Stats()
        self.decode_ms, self.outputs_ms = Stats(), Stats()
        self.last_size = None
        self.last_stamp_ns = None
        self.pose_active = False
        self.static_frame = None
        self.bad_since_report = collections.Counter()
        self.last_input = None


class _Prepared:
    """A decoded frame with its intrinsics, ready for the networks."""
    __slots__ = ('cam', 'msg', 't_recv', 'image', 'encoding', 'K', 'info_msg', 'stamp_ns', 'dt',
                 'want', 'want_pose')

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


class PerceptionNode(Node):
    """See the module docstring. ``close()`` stops the worker (call before destroy_node)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, PARAMS)
        self.add_on_set_parameters_callback(on_set_validator(PARAMS, self._apply_params))
        p = self.p
        if p['static_transform.publish'] and not p['frames.base']:
            raise ValueError('static_transform.publish needs frames.base (the parent frame)')
        names = list(p['cameras'])
        self.multi = bool(names)
        if self.multi:
            bad = [n for n in names if not n or not all(c.isalnum() or c in '_/' for c in n)
                   or n.startswith('/') or n.endswith('/')]
            if bad:
                raise ValueError(f'cameras: {bad} are not relative namespaces (letters, digits, '
                                 '_ and inner /)')
            if len(set(names)) != len(names):
                raise ValueError(f'cameras: duplicate names in {names}')
            if p['frames.base'] or p['static_transform.publish']:
                raise ValueError('frames.base / static_transform.publish apply to the single-camera '
                                 'mode only (with cameras, odometry goes <camera_odom> -> camera frame)')
            if '{camera}' not in p['frames.camera_odom']:
                raise ValueError('frames.camera_odom must contain {camera} (one odom frame per camera)')

        # -- estimator (heavy imports here so that `--help`-like paths stay light) --------------
        from depth_ego_ros.core.estimator import Estimator, EstimatorConfig, Frame, colorize_disparity
        from depth_ego_ros.ros.odometry import PoseChain
        from depth_ego_ros.core.networks.posexp_net import mask_to_mono8
        self._colorize = colorize_disparity
        self._mask_to_mono8 = mask_to_mono8
        self._Frame = Frame
        extra = {'exported_model_dir': p['exported_model']} if p['exported_model'] else {}
        config = EstimatorConfig(
            model=p['model'], pose_model=p['pose_model'],
            learned_intrinsics=p['learned_intrinsics'], width=p['width'], height=p['height'], device=p['device'],
            precision=p['precision'], backend=p['backend'], min_depth=p['min_depth'],
            max_depth=p['max_depth'], scale_mode=p['scale.mode'], scale_factor=p['scale.factor'],
            camera_height=p['scale.camera_height'], num_threads=p['num_threads'], **extra)
        self.estimator = Estimator(config, p['checkpoint'] or None)
        self.device = str(getattr(self.estimator, 'device', p['device']))
        # an exported model's manifest may override pose_model / learned_intrinsics
        self.pose_model = self.estimator.config.pose_model
        self.learned = bool(self.estimator.config.learned_intrinsics)
        if self.learned and self._fallback_k() is not None:
            self.get_logger().warning('learned_intrinsics is set: camera_info.fallback_k is ignored '
                                      '(the learned K is used until a camera_info arrives)')
        self.backend = getattr(self.estimator, 'backend_info', {}).get('backend', p['backend'])
        self._refiner = None
        self._refine_log = (0.0, 0)
        if p['online_refinement.enabled']:
            from depth_ego_ros.core.online_refinement import OnlineRefiner, RefinerConfig
            rc = RefinerConfig(**{f: p[f'online_refinement.{k}'] for k, f in REFINER_PARAMS.items()})
            self._refiner = OnlineRefiner(self.estimator, rc)   # ValueError: unsupported nets
            self._refiner.start()
            self.get_logger().info(
                f'online refinement on: window {rc.window}, {rc.steps} steps x {rc.batch} '
                f'triplets every {rc.interval:g} s, lr {rc.learning_rate:g}, networks '
                f'{rc.networks}, max share {rc.max_share:g}, {rc.threads} thread(s)')
        self._T_base_cam = (_rpy_to_matrix(p['static_transform.xyz'], p['static_transform.rpy'])
                            if p['frames.base'] else np.eye(4))

        def chain():
            return PoseChain(self._T_base_cam, p['odom.translation_noise'], p['odom.rotation_noise'])
        self.cams = [_Camera(n, chain()) for n in names] if self.multi else [_Camera(None, chain())]
        self.counts = self.cams[0].counts if not self.multi else collections.Counter()
        self.chain = self.cams[0].chain                 # single-camera mode (kept for callers)
        self._throttle = KeyedThrottle(p['log_throttle'])
        if self.multi:
            self._slots = KeyedSlots(names)
        else:
            self._slot = LatestSlot()
        self._speed = None
        self._batch_size = Stats()
        self._batch_ms = Stats()

        # -- topics -------------------------------------------------------------------------------
        in_qos = qos.profile(p['qos.input'], p['qos.input_depth'])
        out_qos = qos.profile(p['qos.output'], p['qos.output_depth'])
        for cam in self.cams:
            pre = cam.prefix
            # camera_info first: when both are ready the executor serves it before the image
            cam.sub_info = self.create_subscription(
                CameraInfo, pre + 'camera_info', lambda m, c=cam: self._on_camera_info(c, m), in_qos)
            if p['image_transport'] == 'compressed':
                cam.sub_image = self.create_subscription(
                    CompressedImage, pre + 'image/compressed', lambda m, c=cam: self._on_image(c, m),
                    in_qos)
            else:
                cam.sub_image = self.create_subscription(
                    Image, pre + 'image', lambda m, c=cam: self._on_image(c, m), in_qos)
            cam.pub_depth = self.create_publisher(Image, pre + 'depth', out_qos)
            cam.pub_depth_info = self.create_publisher(CameraInfo, pre + 'depth/camera_info', out_qos)
            cam.pub_colored = self.create_publisher(Image, pre + 'depth/colored', out_qos)
            cam.pub_points = self.create_publisher(PointCloud2, pre + 'points', out_qos)
            cam.pub_odom = self.create_publisher(Odometry, pre + 'odom', out_qos)
            cam.pub_exp = (self.create_publisher(Image, pre + 'explainability', out_qos)
                           if self.pose_model == 'posexp' else None)
        if not self.multi:                              # single-camera names (kept for callers)
            c0 = self.cams[0]
            self.sub_info, self.sub_image = c0.sub_info, c0.sub_image
            self.pub_depth, self.pub_depth_info = c0.pub_depth, c0.pub_depth_info
            self.pub_colored, self.pub_points, self.pub_odom = c0.pub_colored, c0.pub_points, c0.pub_odom
        if p['scale.mode'] == 'speed':
            msg_type = Odometry if p['scale.speed_type'] == 'odometry' else TwistStamped
            self.sub_speed = self.create_subscription(msg_type, p['scale.speed_topic'],
                                                      self._on_speed, in_qos)
        self.tf = TfBroadcaster(self)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(p['diagnostics.period'], self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name='depth_ego_worker', daemon=True)
        self._worker.start()
        inputs = ', '.join(c.sub_image.topic_name for c in self.cams)
        self.get_logger().info(
            f'ready: {p["model"]}/{self.pose_model} {p["width"]}x{p["height"]}'
            f'{" (learned intrinsics)" if self.learned else ""} on {self.device} ({self.backend}, '
            f'{p["precision"]}), input {inputs} '
            f'[{p["qos.input"]}], checkpoint {p["checkpoint"] or "NONE (random weights)"}'
            + (f', {len(self.cams)} cameras batched (window {p["batch_window"]} s)' if self.multi else ''))

    # ------------------------------------------------------------------------------------------
    # callbacks: cheap, never block
    # ------------------------------------------------------------------------------------------
    def _on_image(self, cam: _Camera, msg):
        now = time.monotonic()
        cam.in_rate.tick()
        cam.last_input = now
        if self.multi:
            self._slots.put(cam.name, (msg, now))
        else:
            self._slot.put((msg, now))

    def _on_camera_info(self, cam: _Camera, msg: CameraInfo):
        try:
            entry = (msg, conv.camera_info_to_k(msg), None)
        except ValueError as exc:
            entry = (msg, None, str(exc))
            self._bad(cam, 'bad_camera_info', f'camera_info on {cam.sub_info.topic_name} ignored: {exc}')
        with cam.info_cond:
            cam.camera_info = entry
            cam.infos[conv.stamp_to_ns(msg.header.stamp)] = entry
            while len(cam.infos) > 30:
                cam.infos.popitem(last=False)
            cam.info_cond.notify_all()

    def _on_speed(self, msg):
        v = msg.twist.twist.linear if isinstance(msg, Odometry) else msg.twist.linear
        speed = math.sqrt(v.x * v.x + v.y * v.y + v.z * v.z)
        if math.isfinite(speed):
            self._speed = speed
        else:
            for cam in self.cams:                       # the speed scales every camera
                self._bad(cam, 'bad_speed', f'non-finite speed on {self.sub_speed.topic_name} ignored')

    def _apply_params(self, changes: dict):
        p = dict(self.p)
        p.update(changes)
        self.p = p                                  # one atomic swap; the worker reads self.p
        if 'log_throttle' in changes:
            self._throttle.period = changes['log_throttle']
        if self._refiner is not None:
            rc = {REFINER_PARAMS[k.split('.', 1)[1]]: v for k, v in changes.items()
                  if k.startswith('online_refinement.') and k.split('.', 1)[1] in REFINER_PARAMS}
            if rc:
                self._refiner.update_config(**rc)
        for cam in self.cams:
            if 'odom.translation_noise' in changes:
                cam.chain.translation_noise = changes['odom.translation_noise']
            if 'odom.rotation_noise' in changes:
                cam.chain.rotation_noise = changes['odom.rotation_noise']

    # ------------------------------------------------------------------------------------------
    # problems
    # ------------------------------------------------------------------------------------------
    def _bad(self, cam: _Camera, kind: str, text: str, level: str = 'warning'):
        """Count a bad input of ``kind`` on ``cam``; log it at most once per log_throttle seconds
        per kind (and camera)."""
        cam.counts[kind] += 1
        cam.bad_since_report[kind] += 1
        key = (cam.name, kind) if self.multi else kind
        if self._throttle.ready(key):
            more = self._throttle.take_suppressed(key)
            suffix = f' ({more} more since the last message)' if more else ''
            getattr(self.get_logger(), level)(f'[{kind}] {cam.label}{text}{suffix}')

    # ------------------------------------------------------------------------------------------
    # worker
    # ------------------------------------------------------------------------------------------
    def _work(self):
        if self.multi:
            return self._work_batched()
        cam = self.cams[0]
        while not self._slot.closed:
            item = self._slot.take(timeout=0.5)
            if item is None:
                continue
            try:
                self._process(cam, *item)
            except Exception as exc:  # the worker never dies: count, log, go on
                self._bad(cam, 'processing_error', f'{type(exc).__name__}: {exc}', level='error')

    def _work_batched(self):
        """Multi-camera: take every camera's waiting frame (after batch_window for the others),
        prepare each on its own (a bad frame only drops itself), one infer_batch for all."""
        while not self._slots.closed:
            items = self._slots.take_batch(timeout=0.5, window=self.p['batch_window'])
            if not items:
                continue
            ready = []
            for name, (msg, t_recv) in items.items():
                cam = self.cams[self._slots.keys.index(name)]
                try:
                    prep = self._prepare(cam, msg, t_recv)
                    if prep is not None:
                        ready.append(prep)
                except Exception as exc:
                    self._bad(cam, 'processing_error', f'{type(exc).__name__}: {exc}', level='error')
            if not ready:
                continue
            try:
                results = self._infer_batch(ready)
            except Exception as exc:
                for prep in ready:
                    self._bad(prep.cam, 'processing_error', f'{type(exc).__name__}: {exc}',
                              level='error')
                continue
            for prep, out in zip(ready, results):
                if out is None:
                    continue
                try:
                    self._finish(prep, out.depth, out.relative_pose, with_pose=True, K=out.K,
                                 mask=out.explainability)
                except Exception as exc:
                    self._bad(prep.cam, 'processing_error', f'{type(exc).__name__}: {exc}',
                              level='error')

    def _infer_batch(self, ready: list) -> list:
        """One network call for all prepared frames; when the estimator refuses the batch (one
        frame's intrinsics), each frame alone, so that only the bad one is dropped."""
        frames = [self._Frame(r.image, r.K, r.stamp_ns * 1e-9, self._speed, r.cam.cid, r.encoding)
                  for r in ready]
        t0 = time.perf_counter()
        try:
            outs = self.estimator.infer_batch(frames)
        except ValueError:
            outs = []
            for r, f in zip(ready, frames):
                try:
                    outs.append(self.estimator.infer_batch([f])[0])
                except ValueError as exc:
                    self._bad(r.cam, 'bad_intrinsics', f'frame dropped: {exc}')
                    outs.append(None)
        ms = (time.perf_counter() - t0) * 1e3
        n = sum(o is not None for o in outs)
        if n:
            self._batch_size.add(n)
            self._batch_ms.add(ms)
            self.counts['batches'] += 1
            self.counts['batched_frames'] += n
            if n > 1:
                self.counts['multi_frame_batches'] += 1
            for r, o in zip(ready, outs):
                if o is not None:
                    r.cam.net_ms.add(ms)
        return outs

    def _decode(self, cam: _Camera, msg):
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

    def _fallback_k(self):
        if getattr(self, 'learned', False):
            return None
        fx, fy, cx, cy = self.p['camera_info.fallback_k']
        if fx > 0 and fy > 0 and all(math.isfinite(v) for v in (fx, fy, cx, cy)):
            return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return None

    def _camera_info_for(self, cam: _Camera, stamp_ns: int):
        """The camera_info with the image's stamp when there is one (waiting up to
        camera_info.sync_timeout where it is expected), else the newest."""
        with cam.info_cond:
            expect = cam.info_paired or (cam.camera_info is None and self._fallback_k() is None
                                         and not self.learned)
            if expect:
                cam.info_cond.wait_for(lambda: stamp_ns in cam.infos,
                                       self.p['camera_info.sync_timeout'])
            entry = cam.infos.get(stamp_ns)
            if entry is not None:
                cam.info_paired = True
                return entry
            return cam.camera_info

    def _intrinsics(self, cam: _Camera, width: int, height: int, stamp_ns: int):
        """-> (K, camera_info to republish or None) for an image of this size, or (None, None)
        after saying what is missing. With learned intrinsics and no usable camera_info:
        (LEARNED, None) (the estimator's learned K is used)."""
        info = self._camera_info_for(cam, stamp_ns)
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
        fallback = self._fallback_k()
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

    def _wanted(self, cam: _Camera) -> dict:
        p = self.p
        return {
            'depth': p['publish.depth'] and (cam.pub_depth.get_subscription_count()
                                             + cam.pub_depth_info.get_subscription_count()) > 0,
            'colored': p['publish.colored'] and cam.pub_colored.get_subscription_count() > 0,
            'points': p['publish.points'] and cam.pub_points.get_subscription_count() > 0,
            'odom': p['publish.odom'] and cam.pub_odom.get_subscription_count() > 0,
            'tf': p['publish.tf'] and self.tf.subscribers() > 0,
            'explainability': (cam.pub_exp is not None and p['publish.explainability']
                               and cam.pub_exp.get_subscription_count() > 0),
        }

    def _reset_estimator(self, cam: _Camera):
        if self.multi:
            self.estimator.reset(cam.cid)
        else:
            self.estimator.reset()

    def _reset_trajectory(self, cam: _Camera, kind: str, why: str):
        self._bad(cam, kind, f'{why}: odometry restarts from the origin')
        self._reset_estimator(cam)
        if self._refiner is not None:                   # no triplet across the jump
            self._refiner.reset_window(cam.cid)
        cam.chain.reset()
        cam.counts['trajectory_resets'] += 1

    def _prepare(self, cam: _Camera, msg, t_recv: float):
        """Decode, intrinsics, trajectory checks, wanted outputs -> _Prepared or None (skipped)."""
        t0 = time.perf_counter()
        image, encoding = self._decode(cam, msg)
        if image is None:
            return None
        cam.decode_ms.add((time.perf_counter() - t0) * 1e3)
        height, width = image.shape[:2]
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        K, info_msg = self._intrinsics(cam, width, height, stamp_ns)
        if K is None:
            return None
        learned = isinstance(K, str)                    # LEARNED: the estimator's K (K=None)
        if learned:
            K = None
            cam.counts['frames_learned_intrinsics'] += 1
        if cam.last_size is not None and (width, height) != cam.last_size:
            self._reset_trajectory(cam, 'size_change', f'image size changed from '
                                   f'{cam.last_size[0]}x{cam.last_size[1]} to {width}x{height}')
        elif cam.last_stamp_ns is not None and stamp_ns < cam.last_stamp_ns:
            self._reset_trajectory(cam, 'time_jump_back', f'time jumped backwards by '
                                   f'{(cam.last_stamp_ns - stamp_ns) * 1e-9:.3f} s (bag loop?)')
        dt = None if cam.last_stamp_ns is None else (stamp_ns - cam.last_stamp_ns) * 1e-9

        want = self._wanted(cam)
        if not any(want.values()):
            cam.counts['frames_skipped_no_subscribers'] += 1
            if cam.pose_active:
                self._reset_estimator(cam)      # the motion while idle is not observed
                cam.pose_active = False
            return None
        return _Prepared(cam=cam, msg=msg, t_recv=t_recv, image=image, encoding=encoding, K=K,
                         info_msg=info_msg, stamp_ns=stamp_ns, dt=dt, want=want,
                         # the learned K and the explainability mask come from the pose net
                         want_pose=want['odom'] or want['tf'] or want['explainability'] or learned)

    def _process(self, cam: _Camera, msg, t_recv: float):
        """Single-camera mode: one frame through the estimator (depth only when nobody listens
        to the odometry)."""
        r = self._prepare(cam, msg, t_recv)
        if r is None:
            return
        try:
            if r.want_pose:
                out = self.estimator.infer(r.image, r.K, stamp=r.stamp_ns * 1e-9, speed=self._speed,
                                           encoding=r.encoding)
                depth, rel, K_used, mask = out.depth, out.relative_pose, out.K, out.explainability
                cam.net_ms.add(out.timings.get('total', float('nan')))
            else:
                if cam.pose_active:
                    self.estimator.reset()
                t0 = time.perf_counter()
                depth, rel = self.estimator.depth_only(r.image, r.K, encoding=r.encoding), None
                K_used, mask = r.K, None
                cam.net_ms.add((time.perf_counter() - t0) * 1e3)
        except ValueError as exc:                # e.g. intrinsics the estimator refuses
            self._bad(cam, 'bad_intrinsics', f'frame dropped: {exc}')
            return
        self._finish(r, depth, rel, with_pose=r.want_pose, K=K_used, mask=mask)

    def _finish(self, r: _Prepared, depth, rel, with_pose: bool, K=None, mask=None):
        """Publish one frame's outputs with its own camera's header and advance its trajectory.
        ``with_pose``: the estimator ran the pose network for this frame (its chain continues).
        ``K``: the intrinsics the estimator used (default: the frame's); ``mask``: its
        explainability mask (PoseExpNet) or None."""
        cam, msg = r.cam, r.msg
        cam.pose_active = with_pose
        cam.last_size, cam.last_stamp_ns = (r.image.shape[1], r.image.shape[0]), r.stamp_ns

        t_out = time.perf_counter()
        if self.multi:
            frame = msg.header.frame_id or f'{cam.name.replace("/", "_")}_optical_frame'
        else:
            frame = self.p['frames.camera'] or msg.header.frame_id or DEFAULT_CAMERA_FRAME
        header = Header(stamp=msg.header.stamp, frame_id=frame)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
        K = np.asarray(K if K is not None else r.K, dtype=np.float64)
        self._publish_images(cam, r.want, header, depth, K, r.info_msg)
        if r.want['explainability'] and mask is not None:
            cam.pub_exp.publish(conv.numpy_to_image(self._mask_to_mono8(mask), 'mono8', header))
            cam.counts['published_explainability'] += 1
        if with_pose:
            cam.chain.update(rel, r.dt)
            if r.want_pose:
                self._publish_odometry(cam, r.want, header)
        if self._refiner is not None and K is not None:   # one image copy; work in its thread
            self._refiner.add_frame(r.image, K, r.stamp_ns * 1e-9, self._speed, camera_id=cam.cid,
                                    encoding=r.encoding)
        cam.outputs_ms.add((time.perf_counter() - t_out) * 1e3)
        cam.counts['frames_processed'] += 1
        cam.out_rate.tick()
        cam.latency.add((time.monotonic() - r.t_recv) * 1e3)
        now_ns = self.get_clock().now().nanoseconds
        cam.stamp_latency.add((now_ns - r.stamp_ns) * 1e-6)

    def _publish_images(self, cam: _Camera, want, header, depth, K, info_msg):
        p = self.p
        if want['depth']:
            cam.pub_depth.publish(conv.numpy_to_image(depth, '32FC1', header))
            info = (conv.camera_info_with_header(info_msg, header) if info_msg is not None
                    else conv.make_camera_info(K, depth.shape[1], depth.shape[0], header))
            cam.pub_depth_info.publish(info)
            cam.counts['published_depth'] += 1
        if want['colored']:
            colored = self._colorize(depth, p['colored.percentile'])
            cam.pub_colored.publish(conv.numpy_to_image(colored, 'rgb8', header))
            cam.counts['published_colored'] += 1
        if want['points']:                          # back-projected on the estimator's device
            kwargs = {'camera_id': cam.cid} if self.multi else {}
            packed = self.estimator.point_cloud(stride=p['points.stride'],
                                                min_range=p['points.min_range'],
                                                max_range=p['points.max_range'] or math.inf,
                                                **kwargs)
            cam.pub_points.publish(conv.packed_to_cloud(packed, header))
            cam.counts['published_points'] += 1

    def _odom_frame(self, cam: _Camera) -> str:
        if self.multi:
            return self.p['frames.camera_odom'].replace('{camera}', cam.name.replace('/', '_'))
        return self.p['frames.odom']

    def _publish_odometry(self, cam: _Camera, want, header):
        p = self.p
        child = p['frames.base'] or header.frame_id
        odom = self._odom_frame(cam)
        if p['static_transform.publish'] and cam.static_frame != header.frame_id:
            self.tf.send_static([conv.pose_to_transform(self._T_base_cam, header.stamp,
                                                        p['frames.base'], header.frame_id)])
            cam.static_frame = header.frame_id
        chain = cam.chain
        if want['odom']:
            cam.pub_odom.publish(conv.pose_to_odometry(
                chain.pose, header.stamp, odom, child,
                linear=chain.linear, angular=chain.angular,
                pose_covariance=chain.pose_covariance,
                twist_covariance=chain.twist_covariance))
            cam.counts['published_odom'] += 1
        if want['tf']:
            self.tf.send([conv.pose_to_transform(chain.pose, header.stamp, odom, child)])
            cam.counts['published_tf'] += 1

    # ------------------------------------------------------------------------------------------
    # diagnostics
    # ------------------------------------------------------------------------------------------
    def diagnostics(self, cam: _Camera | None = None) -> DiagnosticStatus:
        """The status of ``cam`` (default: the first / only camera)."""
        cam = cam or self.cams[0]
        p, c = self.p, cam.counts
        lat, slat, net = cam.latency.summary(), cam.stamp_latency.summary(), cam.net_ms.summary()
        dropped = self._slots.dropped[cam.name] if self.multi else self._slot.dropped
        values = {
            'input_rate_hz': cam.in_rate.rate(), 'output_rate_hz': cam.out_rate.rate(),
            'frames_received': cam.in_rate.count, 'frames_processed': c['frames_processed'],
            'frames_dropped': dropped,
            'frames_skipped_no_subscribers': c['frames_skipped_no_subscribers'],
            'latency_ms_mean': lat['mean'], 'latency_ms_p50': lat['p50'], 'latency_ms_max': lat['max'],
            'latency_from_stamp_ms_mean': slat['mean'], 'network_ms_mean': net['mean'],
            'network_ms_p50': net['p50'], 'decode_ms_p50': cam.decode_ms.summary()['p50'],
            'outputs_ms_p50': cam.outputs_ms.summary()['p50'],
            'trajectory_resets': c['trajectory_resets'],
            'device': self.device, 'backend': self.backend, 'model': p['model'],
            'pose_model': self.pose_model,
            'intrinsics': ('learned' if cam.camera_info is None or cam.camera_info[1] is None
                           else 'camera_info') if self.learned else 'given',
            'frames_learned_intrinsics': c['frames_learned_intrinsics'],
            'network_input': f'{p["width"]}x{p["height"]}', 'image_topic': cam.sub_image.topic_name,
        }
        values['online_refinement'] = 'on' if self._refiner is not None else 'off'
        if self._refiner is not None:
            st = self._refiner.stats()
            values.update({f'online_refinement.{k}': st[k] for k in (
                'rounds', 'accepted', 'rejected', 'nonfinite', 'resets', 'errors', 'share',
                'cpu_share', 'round_ms_mean', 'build_ms_mean', 'swap_ms_max', 'weights_version')})
        values.update({f'bad_input.{k}': c[k] for k in BAD_INPUTS})
        values.update({f'published.{k}': c[f'published_{k}'] for k in OUTPUTS})
        if self.multi:
            bs = self._batch_size.summary()
            values.update({
                'camera': cam.name, 'cameras': len(self.cams), 'odom_frame': self._odom_frame(cam),
                'batches': self.counts['batches'], 'batched_frames': self.counts['batched_frames'],
                'multi_frame_batches': self.counts['multi_frame_batches'],
                'batch_size_mean': bs['mean'], 'batch_size_max': bs['max'],
                'batch_ms_p50': self._batch_ms.summary()['p50'],
            })
        name = f'{self.get_name()}: perception' + (f' {cam.name}' if self.multi else '')
        status = DiagnosticStatus(name=name, hardware_id=self.device)
        recent_bad = {k: n for k, n in cam.bad_since_report.items() if n}
        cam.bad_since_report.clear()
        silent = cam.last_input is None or time.monotonic() - cam.last_input > 5.0
        if recent_bad:
            status.level = DiagnosticStatus.WARN
            status.message = 'bad input: ' + ', '.join(f'{k} x{n}' for k, n in sorted(recent_bad.items()))
        elif silent:
            status.level = DiagnosticStatus.WARN
            status.message = f'no images on {values["image_topic"]} for 5 s'
        else:
            status.level = DiagnosticStatus.OK
            status.message = f'{values["output_rate_hz"]:.1f} Hz out, {values["frames_dropped"]} dropped'
        status.values = [KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        return status

    def _log_refinement(self):
        """One info line about the refiner when rounds happened, at most every 10 s."""
        st = self._refiner.stats()
        last_t, last_rounds = self._refine_log
        now = time.monotonic()
        if st['rounds'] != last_rounds and now - last_t >= 10.0:
            self._refine_log = (now, st['rounds'])
            self.get_logger().info(
                f"online refinement: {st['rounds']} rounds ({st['accepted']} accepted, "
                f"{st['rejected']} rejected, {st['nonfinite']} non-finite), share "
                f"{st['share'] * 100:.0f} %, {st['round_ms_mean']:.0f} ms busy per round, "
                f"weights swapped in {st['swap_ms_max'] * 1e3:.0f} us (max)"
                + (f"; last error: {self._refiner.last_error}" if self._refiner.last_error else ''))

    def _publish_diagnostics(self):
        if self._refiner is not None:
            self._log_refinement()
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics(cam) for cam in self.cams]
        self.pub_diag.publish(msg)

    def close(self):
        (self._slots if self.multi else self._slot).close()
        self._worker.join(timeout=10.0)
        if self._refiner is not None:
            self._refiner.stop()
            out = self.p['online_refinement.save_dir']
            if out:
                try:
                    st = self._refiner.stats()
                    d = self._refiner.save(out)
                    self.get_logger().info(f"online refinement: weights saved to {d} "
                                           f"({st['accepted']} of {st['rounds']} rounds accepted)")
                except Exception as exc:  # never lose the shutdown over it
                    self.get_logger().error(f'online refinement: saving to {out} failed: '
                                            f'{type(exc).__name__}: {exc}')
            self._refiner.close()


def main(args=None) -> int:
    return run_node(PerceptionNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())
