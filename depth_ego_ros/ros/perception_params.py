"""The perception node's parameters: the table (config/depth_ego.yaml documents it), the start-up
checks across parameters, and what they configure in core (EstimatorConfig, RefinerConfig, the
base -> camera transform). No node here: a plain and a lifecycle node can share it.
"""
from __future__ import annotations

import math

import numpy as np

from depth_ego_ros.core.names import MODELS, POSE_MODELS   # torch-free
from depth_ego_ros.ros import qos
from depth_ego_ros.ros.params import Param

DEFAULT_CAMERA_FRAME = 'camera_optical_frame'
_OPTICAL_RPY = [-math.pi / 2, 0.0, -math.pi / 2]   # base (x fwd, z up) -> optical (z fwd, y down)


def _is_cuda_n(v) -> bool:
    return isinstance(v, str) and v.startswith('cuda:') and v[5:].isdigit()


# Parameters: the table config/depth_ego.yaml documents (test_perception_node_units checks that
# both agree). read_only = start-up only; the others can be changed with `ros2 param set`.
PARAMS = [
    # -- network / estimator ------------------------------------------------------------------
    Param('checkpoint', '', 'checkpoint directory (monodepth2 layout: encoder.pth, depth.pth, '
          'pose_encoder.pth, pose.pth) or a model-zoo name such as mono_640x192 (`depth-ego weights '
          'list`; fetched beforehand with `depth-ego weights fetch NAME`); empty = random weights '
          '(meaningless output, a warning)', read_only=True),
    Param('auto_fetch', False, 'when checkpoint is a model-zoo name not downloaded yet, download '
          'it at start-up (otherwise the node stops with the fetch command to run)', read_only=True),
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
    Param('precision', 'fp32', 'network precision: fp32; auto = with backend auto/openvino on '
          'the CPU the fastest that passes the accuracy guard (fp32 / bf16), else fp32; fp16 '
          'needs CUDA; bf16 on CUDA or CPUs with bf16 units; int8 = an OpenVINO int8 export',
          choices=('auto', 'fp32', 'fp16', 'bf16', 'int8'), read_only=True),
    Param('backend', 'auto', 'inference backend: auto = on the CPU the fastest of ONNX Runtime / '
          'OpenVINO passing the accuracy guard (measured once, cached), torch on CUDA, the '
          'exported format\'s runtime with exported_model; openvino falls back to ONNX Runtime '
          'where it is not installed; tensorrt needs exported_model',
          choices=('auto', 'torch', 'torchscript', 'onnxruntime', 'openvino', 'tensorrt'),
          read_only=True),
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
    Param('scale.factor', 0.0, 'depth multiplier for scale.mode fixed; 0 = the factor the '
          'checkpoint records (5.4 for monodepth2 stereo / mono+stereo zoo models), else 1',
          range=(0.0, 1e6), read_only=True),
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
          range=(0.0, 3600.0)),
    # -- multi-camera --------------------------------------------------------------------------
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
    # -- online refinement (core/online_refinement/, docs/online_refinement.md) -----------------
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


# How each run-time parameter takes effect (docs/perception_node.md lists this; a test checks
# that every parameter is either here or start-up only).
RUNTIME_EFFECT = {
    'camera_info.fallback_k': 'the next frame without a valid camera_info uses it',
    'camera_info.sync_timeout': 'the next frame\'s camera_info pairing',
    'publish.depth': 'the next frame (an output switched off is not computed)',
    'publish.colored': 'the next frame', 'publish.points': 'the next frame',
    'publish.odom': 'the next frame', 'publish.tf': 'the next frame (odom -> base on /tf)',
    'publish.explainability': 'the next frame (posexp only)',
    'points.stride': 'the next point cloud', 'points.min_range': 'the next point cloud',
    'points.max_range': 'the next point cloud', 'colored.percentile': 'the next coloured depth',
    'odom.translation_noise': 'the next odometry covariance',
    'odom.rotation_noise': 'the next odometry covariance',
    'log_throttle': 'the next log line about bad input',
    'batch_window': 'the next multi-camera batch',
    'online_refinement.steps': 'the next refinement round (refused while refinement is off)',
    'online_refinement.batch': 'the next refinement round',
    'online_refinement.learning_rate': 'the next refinement round',
    'online_refinement.interval': 'the next refinement round',
    'online_refinement.max_share': 'the next refinement round',
    'online_refinement.networks': 'the next refinement round',
    'online_refinement.reset_after_rejects': 'the next rejected round',
}

# Why each start-up-only parameter cannot change while the node runs (the refusal's reason).
_WHY_START_UP = (
    (('checkpoint', 'auto_fetch', 'model', 'pose_model', 'learned_intrinsics', 'width', 'height',
      'device', 'precision', 'backend', 'exported_model', 'num_threads', 'min_depth', 'max_depth',
      'scale.'), 'it shapes the loaded networks / estimator'),
    (('image_transport', 'qos.', 'scale.speed_topic', 'scale.speed_type', 'cameras',
      'diagnostics.period'), 'it fixes the subscriptions, publishers or timers'),
    (('frames.', 'static_transform.'), 'the trajectory\'s frames stay fixed for a run'),
    (('online_refinement.',), 'it sizes the online refiner when it starts'),
)


def runtime_refusal(spec, value, *, lifecycle: bool = False, configured: bool = True,
                    refiner_on: bool = True) -> str | None:
    """Why a run-time change of ``spec`` is refused, or None when it applies. Start-up-only
    parameters (``read_only``) are refused while the networks are loaded (always for the plain
    node; for the lifecycle node outside the unconfigured state, where ``configure`` reads
    them); online_refinement.* values are refused while refinement is off (they would never be
    used)."""
    name = spec.name
    if spec.read_only and configured:
        why = next((w for prefixes, w in _WHY_START_UP
                    if any(name == x or (x.endswith('.') and name.startswith(x)) for x in prefixes)),
                   'it is read at start-up only')
        how = ('deactivate and clean up the node, set it, then configure and activate again'
               if lifecycle else
               f'restart the node with -p {name}:=... (or run depth_ego_lifecycle_node: '
               'cleanup, set it, configure)')
        return f'{name} cannot change at run time ({why}): {how}'
    if name.startswith('online_refinement.') and configured and not refiner_on \
            and name != 'online_refinement.enabled':
        return (f'{name} is not used: online refinement is off (online_refinement.enabled is '
                'start-up only)')
    return None


def check_params(p: dict) -> list:
    """Start-up checks that span several parameters; -> the camera names (empty = one camera).
    Raises ValueError saying what to change."""
    if p['static_transform.publish'] and not p['frames.base']:
        raise ValueError('static_transform.publish needs frames.base (the parent frame)')
    names = list(p['cameras'])
    if names:
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
    return names


def estimator_config(p: dict):
    """The EstimatorConfig of these parameters (imports torch)."""
    from depth_ego_ros.core.estimator import EstimatorConfig
    extra = {'exported_model_dir': p['exported_model']} if p['exported_model'] else {}
    return EstimatorConfig(
        model=p['model'], pose_model=p['pose_model'],
        learned_intrinsics=p['learned_intrinsics'], width=p['width'], height=p['height'], device=p['device'],
        precision=p['precision'], backend=p['backend'], min_depth=p['min_depth'],
        max_depth=p['max_depth'], scale_mode=p['scale.mode'], scale_factor=p['scale.factor'] or None,
        camera_height=p['scale.camera_height'], num_threads=p['num_threads'], **extra)


def refiner_config(p: dict):
    """The RefinerConfig of the online_refinement.* parameters (imports torch)."""
    from depth_ego_ros.core.online_refinement import RefinerConfig
    return RefinerConfig(**{f: p[f'online_refinement.{k}'] for k, f in REFINER_PARAMS.items()})


def refiner_changes(changes: dict) -> dict:
    """RefinerConfig fields changed by a parameter update (``ros2 param set``)."""
    return {REFINER_PARAMS[k.split('.', 1)[1]]: v for k, v in changes.items()
            if k.startswith('online_refinement.') and k.split('.', 1)[1] in REFINER_PARAMS}


def fallback_k(p: dict):
    """camera_info.fallback_k as a 3x3 K, or None when it is not set (zeros / not finite)."""
    fx, fy, cx, cy = p['camera_info.fallback_k']
    if fx > 0 and fy > 0 and all(math.isfinite(v) for v in (fx, fy, cx, cy)):
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return None


def rpy_to_matrix(xyz, rpy) -> np.ndarray:
    """Fixed-axis roll, pitch, yaw (ROS convention: R = Rz(yaw) Ry(pitch) Rx(roll))."""
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    T = np.eye(4)
    T[:3, :3] = [[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                 [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                 [-sp, cp * sr, cp * cr]]
    T[:3, 3] = xyz
    return T


def base_to_camera(p: dict) -> np.ndarray:
    """T_base_cam from static_transform.xyz/rpy when frames.base is set, else identity."""
    return (rpy_to_matrix(p['static_transform.xyz'], p['static_transform.rpy'])
            if p['frames.base'] else np.eye(4))


__all__ = ['DEFAULT_CAMERA_FRAME', 'PARAMS', 'REFINER_PARAMS', 'base_to_camera', 'check_params',
           'estimator_config', 'fallback_k', 'refiner_changes', 'refiner_config', 'rpy_to_matrix',
           'RUNTIME_EFFECT', 'runtime_refusal']
