"""Write a synthetic sequence as a rosbag2 (MCAP by default) with the `rosbags` library.

Topics (names configurable through :class:`SynthTopics`):

=============================  ===============================  ==========================================
topic                          type                             content
=============================  ===============================  ==========================================
/camera/image_raw              sensor_msgs/msg/Image            rgb8, frame ``camera_optical_frame``
/camera/camera_info            sensor_msgs/msg/CameraInfo       plumb_bob, zero distortion, every frame
/odom                          nav_msgs/msg/Odometry            base_link twist (body frame) + planar
                                                                dead-reckoned pose in ``odom``, odom_rate
/ground_truth/depth            sensor_msgs/msg/Image            32FC1 z-depth metres (REP 118: +Inf = sky)
/ground_truth/pose             geometry_msgs/msg/PoseStamped    camera optical frame -> ``world``
/tf_static                     tf2_msgs/msg/TFMessage           base_link -> camera_optical_frame
/camera/instance_mask          sensor_msgs/msg/Image            only with moving objects: mono16 instance
                                                                id per pixel (0 = static world, k = moving
                                                                object k, the same k in every frame)
/ground_truth/objects          geometry_msgs/msg/PoseArray      only with moving objects: T_world_obj of
                                                                object k at index k-1 (frame ``world``)
=============================  ===============================  ==========================================

Header stamps are the sensor times; each message's bag time equals its header stamp. The type
definitions and hashes come from rosbags' ROS 2 Kilted typestore, so ``ros2 bag info/play`` on a
distro and any rosbags/mcap reader open the bag.

Until the project's bag I/O module exists this writer talks to ``rosbags`` directly (a small,
self-contained function on purpose).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.geometry import matrix_to_quat_xyzw
from .synth import SyntheticWorld

__all__ = ['SynthTopics', 'write_synth_bag', 'render_workers']


@dataclass(frozen=True)
class SynthTopics:
    image: str = '/camera/image_raw'
    camera_info: str = '/camera/camera_info'
    odom: str = '/odom'
    gt_depth: str = '/ground_truth/depth'
    gt_pose: str = '/ground_truth/pose'
    tf_static: str = '/tf_static'
    instance_mask: str = '/camera/instance_mask'
    gt_objects: str = '/ground_truth/objects'
    camera_frame: str = 'camera_optical_frame'
    base_frame: str = 'base_link'
    odom_frame: str = 'odom'
    world_frame: str = 'world'


def _typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


def _stamp(ts, t_ns: int):
    sec, nsec = divmod(int(t_ns), 1_000_000_000)
    return ts.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec)


class _Msgs:
    """Builders for the few message types the synthetic bag needs."""

    def __init__(self, ts, topics: SynthTopics):
        self.ts, self.T, self.topics = ts, ts.types, topics

    def header(self, t, frame):
        return self.T['std_msgs/msg/Header'](stamp=_stamp(self.ts, t), frame_id=frame)

    def image(self, t, arr: np.ndarray, encoding: str):
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        return self.T['sensor_msgs/msg/Image'](
            header=self.header(t, self.topics.camera_frame), height=h, width=w, encoding=encoding,
            is_bigendian=0, step=arr.strides[0], data=arr.view(np.uint8).reshape(-1))

    def camera_info(self, t, K, w, h):
        P = np.zeros((3, 4))
        P[:3, :3] = K
        roi = self.T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False)
        return self.T['sensor_msgs/msg/CameraInfo'](
            header=self.header(t, self.topics.camera_frame), height=h, width=w,
            distortion_model='plumb_bob', d=np.zeros(5), k=np.asarray(K, float).reshape(-1),
            r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0, roi=roi)

    def pose(self, T):
        q = matrix_to_quat_xyzw(T[:3, :3])
        G = self.T
        return G['geometry_msgs/msg/Pose'](
            position=G['geometry_msgs/msg/Point'](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            orientation=G['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]))

    def vec3(self, v):
        return self.T['geometry_msgs/msg/Vector3'](x=float(v[0]), y=float(v[1]), z=float(v[2]))

    def odometry(self, t, T, lin, ang, pose_var, twist_var):
        G = self.T
        pc = np.zeros(36)
        pc[[0, 7, 14, 21, 28, 35]] = pose_var
        tc = np.zeros(36)
        tc[[0, 7, 14, 21, 28, 35]] = twist_var
        return G['nav_msgs/msg/Odometry'](
            header=self.header(t, self.topics.odom_frame), child_frame_id=self.topics.base_frame,
            pose=G['geometry_msgs/msg/PoseWithCovariance'](pose=self.pose(T), covariance=pc),
            twist=G['geometry_msgs/msg/TwistWithCovariance'](
                twist=G['geometry_msgs/msg/Twist'](linear=self.vec3(lin), angular=self.vec3(ang)),
                covariance=tc))

    def pose_stamped(self, t, T, frame):
        return self.T['geometry_msgs/msg/PoseStamped'](header=self.header(t, frame), pose=self.pose(T))

    def pose_array(self, t, Ts, frame):
        return self.T['geometry_msgs/msg/PoseArray'](header=self.header(t, frame),
                                                     poses=[self.pose(T) for T in Ts])

    def tf_static(self, t, T, parent, child):
        G = self.T
        q = matrix_to_quat_xyzw(T[:3, :3])
        tr = G['geometry_msgs/msg/Transform'](
            translation=self.vec3(T[:3, 3]),
            rotation=G['geometry_msgs/msg/Quaternion'](x=q[0], y=q[1], z=q[2], w=q[3]))
        ts_ = G['geometry_msgs/msg/TransformStamped'](header=self.header(t, parent),
                                                      child_frame_id=child, transform=tr)
        return G['tf2_msgs/msg/TFMessage'](transforms=[ts_])


def _qos(transient_local: bool = False):
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    return [Qos(history=QosHistory.KEEP_LAST, depth=1 if transient_local else 10,
                reliability=QosReliability.RELIABLE,
                durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
                deadline=QosTime(0, 0), lifespan=QosTime(0, 0), liveliness=QosLiveliness.AUTOMATIC,
                liveliness_lease_duration=QosTime(0, 0), avoid_ros_namespace_conventions=False)]


def write_synth_bag(world: SyntheticWorld, out, *, topics: SynthTopics = SynthTopics(),
                    storage: str = 'mcap', ground_truth: bool = True, overwrite: bool = False,
                    progress=None, workers: int = 1) -> dict:
    """Render every frame of `world` and write a rosbag2 directory at `out`.

    Args:
        world: the world/trajectory to render.
        out: bag directory to create (must not exist unless overwrite=True).
        storage: 'mcap' (default) or 'sqlite3'.
        ground_truth: also write the /ground_truth/* topics.
        progress: optional callable(i, n) after each frame.
        workers: frames rendered by this many processes (forked, Linux); the frames are a
            deterministic function of the world, so the bag is the same as with one.
    Returns:
        dict with path, frames, messages per topic, render/total seconds, bytes.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = Path(out)
    if storage not in ('mcap', 'sqlite3'):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if out.exists():
        if not overwrite:
            raise FileExistsError(f'{out} exists already (pass overwrite=True / --overwrite to replace it)')
        import shutil
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    ts = _typestore()
    M = _Msgs(ts, topics)
    cfg = world.config
    odo = world.odometry()
    t_start = time.perf_counter()
    render_s = 0.0
    counts: dict[str, int] = {}
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(out, version=9, storage_plugin=plugin) as w:
        conns = {}

        def conn(key, topic, msgtype, latched=False):
            conns[key] = w.add_connection(topic, msgtype, typestore=ts,
                                          offered_qos_profiles=_qos(latched))

        conn('image', topics.image, 'sensor_msgs/msg/Image')
        conn('info', topics.camera_info, 'sensor_msgs/msg/CameraInfo')
        conn('odom', topics.odom, 'nav_msgs/msg/Odometry')
        conn('tf_static', topics.tf_static, 'tf2_msgs/msg/TFMessage', latched=True)
        if ground_truth:
            conn('gt_depth', topics.gt_depth, 'sensor_msgs/msg/Image')
            conn('gt_pose', topics.gt_pose, 'geometry_msgs/msg/PoseStamped')
        movers = getattr(world, 'num_moving_objects', 0) > 0
        if movers:
            conn('mask', topics.instance_mask, 'sensor_msgs/msg/Image')
            if ground_truth:
                conn('gt_objects', topics.gt_objects, 'geometry_msgs/msg/PoseArray')

        def put(key, t, msg, msgtype):
            w.write(conns[key], int(t), ts.serialize_cdr(msg, msgtype))
            counts[conns[key].topic] = counts.get(conns[key].topic, 0) + 1

        t0 = int(world.stamps_ns[0])
        put('tf_static', t0, M.tf_static(t0, world.T_base_cam, topics.base_frame, topics.camera_frame),
            'tf2_msgs/msg/TFMessage')
        k = 0
        n_odo = len(odo.stamps)
        twist_var = (cfg.odom_noise * np.maximum(odo.true_speed, 0.1)) ** 2 + 1e-6
        dist = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(odo.T_odom_base[:, :3, 3], axis=0), axis=1))])
        for i, (f, frame_s) in enumerate(_rendered(world, workers)):
            t_i = int(world.stamps_ns[i])
            while k < n_odo and odo.stamps_ns[k] <= t_i:
                pv = (0.01 * cfg.odom_noise * dist[k]) ** 2 + 1e-6  # drift grows with distance
                put('odom', odo.stamps_ns[k], M.odometry(odo.stamps_ns[k], odo.T_odom_base[k], odo.linear[k],
                                                         odo.angular[k], pv, twist_var[k]),
                    'nav_msgs/msg/Odometry')
                k += 1
            render_s += frame_s
            put('info', t_i, M.camera_info(t_i, f.K, world.width, world.height), 'sensor_msgs/msg/CameraInfo')
            put('image', t_i, M.image(t_i, f.rgb, 'rgb8'), 'sensor_msgs/msg/Image')
            if ground_truth:
                put('gt_depth', t_i, M.image(t_i, f.depth.astype(np.float32), '32FC1'), 'sensor_msgs/msg/Image')
                put('gt_pose', t_i, M.pose_stamped(t_i, f.T_world_cam, topics.world_frame),
                    'geometry_msgs/msg/PoseStamped')
            if movers:
                put('mask', t_i, M.image(t_i, f.instance_mask.astype('<u2'), 'mono16'), 'sensor_msgs/msg/Image')
                if ground_truth:
                    put('gt_objects', t_i, M.pose_array(t_i, f.object_poses, topics.world_frame),
                        'geometry_msgs/msg/PoseArray')
            if progress is not None:
                progress(i + 1, len(world))
        while k < n_odo:  # odometry after the last frame (none by construction, kept for safety)
            put('odom', odo.stamps_ns[k], M.odometry(odo.stamps_ns[k], odo.T_odom_base[k], odo.linear[k],
                                                     odo.angular[k], 1e-6, twist_var[k]), 'nav_msgs/msg/Odometry')
            k += 1
    total = time.perf_counter() - t_start
    nbytes = sum(p.stat().st_size for p in out.rglob('*') if p.is_file())
    return {'path': str(out), 'frames': len(world), 'messages': counts, 'render_s': render_s,
            'total_s': total, 'bytes': nbytes}


def render_workers(limit: int = 8) -> int:
    """One render process per core this process may use (at most ``limit``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return max(1, min(cores or 1, limit))


_WORLD = None   # the world a forked render worker draws from (set just before the fork)


def _render_one(i: int):
    t0 = time.perf_counter()
    return _WORLD.frame(i), time.perf_counter() - t0


def _rendered(world: SyntheticWorld, workers: int):
    """(frame, seconds) in frame order; rendered by ``workers`` forked processes when > 1 (the
    CPU time of all of them is the summed seconds)."""
    global _WORLD
    import multiprocessing as mp
    n = len(world)
    if workers <= 1 or n < 2 * workers or 'fork' not in mp.get_all_start_methods():
        for i in range(n):
            t0 = time.perf_counter()
            f = world.frame(i)
            yield f, time.perf_counter() - t0
        return
    _WORLD = world
    try:
        with mp.get_context('fork').Pool(workers) as pool:
            yield from pool.imap(_render_one, range(n), chunksize=4)
    finally:
        _WORLD = None
