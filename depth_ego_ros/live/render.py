"""Render what the live view streamed (recorded CDR messages of its channels) as one PNG: the
camera image and the coloured depth of one frame above a top view of the point clouds in the
odom frame with the trajectory (path). What the shipped Foxglove layout shows, drawn with
matplotlib, so that docs/live_view.png is made from real channel data (bench/live_view_screenshot.py).

No ROS: messages are decoded with the rosbags type store (depth_ego_ros.data.bag_types).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from depth_ego_ros.data.bag_types import TypeCatalog

_NP = {7: np.float32, 8: np.float64, 2: np.uint8, 4: np.uint16, 5: np.int32, 6: np.uint32}


def image_array(msg) -> np.ndarray:
    """sensor_msgs/Image (rosbags object) -> HxW or HxWxC array (rgb8/bgr8/mono8/32FC1)."""
    dtype = np.float32 if msg.encoding == '32FC1' else np.uint8
    ch = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4}.get(msg.encoding, 1)
    row = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    arr = row[:, :msg.width * ch * np.dtype(dtype).itemsize].copy().view(dtype)
    arr = arr.reshape(msg.height, msg.width, ch) if ch > 1 else arr.reshape(msg.height, msg.width)
    if msg.encoding.startswith('bgr'):
        arr = arr[..., [2, 1, 0]]
    return arr


def cloud_arrays(msg):
    """sensor_msgs/PointCloud2 (x, y, z float32 + packed rgb) -> (N x 3 float, N x 3 uint8)."""
    names = {f.name: f for f in msg.fields}
    raw = np.frombuffer(bytes(msg.data), np.uint8).reshape(-1, msg.point_step)
    xyz = np.stack([raw[:, names[k].offset:names[k].offset + 4].copy().view(np.float32)[:, 0]
                    for k in 'xyz'], axis=1)
    rgb = np.zeros((len(raw), 3), np.uint8)
    if 'rgb' in names:
        o = names['rgb'].offset
        packed = raw[:, o:o + 4].copy().view(np.uint32)[:, 0]
        rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], 1).astype(np.uint8)
    ok = np.all(np.isfinite(xyz), axis=1)
    return xyz[ok], rgb[ok]


def pose_matrix(position, orientation) -> np.ndarray:
    x, y, z, w = (orientation.x, orientation.y, orientation.z, orientation.w)
    T = np.eye(4)
    T[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    T[:3, 3] = (position.x, position.y, position.z)
    return T


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def since_restart(msgs: list) -> list:
    """The messages (in arrival order) after the last jump back of their stamps: a replayed bag
    that looped, or a restarted trajectory, repeats stamps."""
    stamps = [_stamp(m) for m in msgs]
    start = max((i for i in range(1, len(stamps)) if stamps[i] < stamps[i - 1]), default=0)
    return msgs[start:]


def decode(recorded: dict, types: dict) -> dict:
    """{topic: [CDR bytes]} + {topic: type name} -> {topic: [rosbags message]}."""
    cat = TypeCatalog()
    return {t: [cat.deserialize(b, types[t]) for b in msgs] for t, msgs in recorded.items()}


def render(msgs: dict, topics: dict, out: Path, title: str = '', clouds: int = 12) -> dict:
    """Draw decoded messages ``msgs`` ({topic: [msg]}; ``topics`` maps camera, colored, points,
    odom, path, tf_static to topic names) into ``out``. Returns what was drawn."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    colored = {_stamp(m): m for m in since_restart(msgs.get(topics['colored'], []))}
    camera = {_stamp(m): m for m in since_restart(msgs.get(topics['camera'], []))}
    odom = {_stamp(m): m for m in since_restart(msgs.get(topics['odom'], []))}
    both = sorted(set(colored) & set(camera)) or sorted(colored)
    if not both:
        raise ValueError('no coloured depth received')
    stamp = both[-1]
    # base -> camera from /tf_static (identity when the odometry's child is the camera)
    static = {}
    for m in msgs.get(topics.get('tf_static', ''), []):
        for tr in m.transforms:
            static[(tr.header.frame_id, tr.child_frame_id)] = pose_matrix(tr.transform.translation,
                                                                          tr.transform.rotation)

    fig = plt.figure(figsize=(12, 7.5), dpi=100)
    gs = fig.add_gridspec(2, 2, height_ratios=[1, 1.6])
    ax_cam, ax_depth, ax_top = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1]), fig.add_subplot(gs[1, :])
    if stamp in camera:
        ax_cam.imshow(image_array(camera[stamp]))
    ax_cam.set_title(f'{topics["camera"]}')
    ax_depth.imshow(image_array(colored[stamp]))
    ax_depth.set_title(f'{topics["colored"]}')
    for a in (ax_cam, ax_depth):
        a.axis('off')

    drawn = {'stamp': stamp, 'clouds': 0, 'points': 0, 'path_poses': 0}
    paths = msgs.get(topics['path'], [])
    # clouds along the current trajectory (since the path last started), evenly spaced
    start = _stamp(paths[-1].poses[0]) if paths and paths[-1].poses else 0
    along = [(s, c) for c in since_restart(msgs.get(topics['points'], []))
             if (s := _stamp(c)) in odom and s >= start]
    pick = np.unique(np.linspace(0, len(along) - 1, min(clouds, len(along))).round().astype(int)) \
        if along else []
    for s, c in (along[i] for i in pick):
        o = odom[s]
        T = pose_matrix(o.pose.pose.position, o.pose.pose.orientation)
        T = T @ static.get((o.child_frame_id, c.header.frame_id), np.eye(4))
        xyz, rgb = cloud_arrays(c)
        if not len(xyz):
            continue
        w = xyz @ T[:3, :3].T + T[:3, 3]
        ax_top.scatter(w[:, 0], w[:, 1], c=rgb / 255.0, s=2, linewidths=0)
        drawn['clouds'] += 1
        drawn['points'] += len(w)
    if paths:
        p = paths[-1]
        xy = np.array([[q.pose.position.x, q.pose.position.y] for q in p.poses])
        if len(xy):
            ax_top.plot(xy[:, 0], xy[:, 1], '-', color='#ff8800', lw=2.5, label=f'{topics["path"]}')
            ax_top.plot(xy[-1, 0], xy[-1, 1], 'o', color='#ff8800', ms=8)
            drawn['path_poses'] = len(xy)
    ax_top.set_aspect('equal', adjustable='datalim')
    ax_top.set_xlabel('x (m, odom)')
    ax_top.set_ylabel('y (m, odom)')
    ax_top.set_title(f'{topics["points"]} ({drawn["clouds"]} clouds along the drive, placed by '
                     'the odometry) and the path, top view of the odom frame')
    ax_top.grid(alpha=0.3)
    if paths:
        ax_top.legend(loc='upper right')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return drawn


__all__ = ['cloud_arrays', 'decode', 'image_array', 'pose_matrix', 'render']
