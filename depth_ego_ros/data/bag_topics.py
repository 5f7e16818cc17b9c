"""Which topics of a bag the dataset reads: the camera, its CameraInfo (sibling ``camera_info``
in the same or a parent namespace), the odometry and the instance masks; and where the bag is."""
from __future__ import annotations

import logging
from pathlib import Path

from .dataset_config import (CAMERA_INFO, COMPRESSED, IMAGE, ODOMETRY, TWIST_STAMPED, BagDatasetError,
                             DatasetConfig)

log = logging.getLogger('depth_ego_ros.data.dataset')


def _bag_dir(path) -> Path:
    p = Path(path)
    if p.is_file() and (p.parent / 'metadata.yaml').exists():
        p = p.parent
    if not p.exists():
        raise BagDatasetError(f'bag {p} does not exist')
    if not (p / 'metadata.yaml').exists() and p.suffix != '.bag':
        raise BagDatasetError(f'{p} is not a rosbag2 directory (no metadata.yaml); '
                              'if its recorder was killed, run `depth-ego bag-repair` on it first')
    return p


def _is_mask_topic(topic: str) -> bool:
    parts = [p for p in topic.split('/') if p]
    return bool(parts) and 'mask' in parts[-1].lower()


def _pick_mask_topic(name, topics: dict, cfg: DatasetConfig, image_topic: str):
    """The instance-mask topic, or None (auto: the Image topic named *mask*, preferring
    *instance_mask* and the camera's namespace)."""
    listing = ', '.join(f'{t} [{m}]' for t, m in sorted(topics.items())) or '(none)'
    if cfg.mask_topic == '':
        return None
    if cfg.mask_topic:
        if topics.get(cfg.mask_topic) != IMAGE:
            raise BagDatasetError(f'bag {name}: no sensor_msgs/Image mask topic {cfg.mask_topic!r}; '
                                  f'topics: {listing}')
        return cfg.mask_topic
    cands = sorted(t for t, m in topics.items() if m == IMAGE and t != image_topic and _is_mask_topic(t))
    if len(cands) > 1:
        inst = [t for t in cands if 'instance' in t.lower()]
        cands = inst or cands
    if len(cands) > 1:
        ns = image_topic.rsplit('/', 1)[0]
        same = [t for t in cands if t.rsplit('/', 1)[0] == ns]
        cands = same or cands
    if len(cands) > 1:
        log.warning('bag %s: several mask topics %s, none used (set mask_topic)', name, cands)
        return None
    return cands[0] if cands else None


def _pick_topics(name, topics: dict, cfg: DatasetConfig):
    """topics: topic -> msgtype. Returns (image_topic, camera_info_topic, odom_topic|None)."""
    listing = ', '.join(f'{t} [{m}]' for t, m in sorted(topics.items())) or '(none)'
    excluded = tuple(cfg.exclude_prefixes)
    infos = {t for t, m in topics.items() if m == CAMERA_INFO}
    if cfg.image_topic:
        if cfg.image_topic not in topics:
            raise BagDatasetError(f'bag {name}: no camera topic {cfg.image_topic!r}; topics: {listing}')
        if topics[cfg.image_topic] not in (IMAGE, COMPRESSED):
            raise BagDatasetError(f'bag {name}: topic {cfg.image_topic!r} is {topics[cfg.image_topic]}, '
                                  'not sensor_msgs/Image or CompressedImage')
        image = cfg.image_topic
    else:
        cands = [t for t, m in topics.items() if m in (IMAGE, COMPRESSED)
                 and not t.startswith(excluded) and 'depth' not in t.split('/')
                 and not _is_mask_topic(t)]
        if not cands:
            raise BagDatasetError(f'bag {name}: no camera image topic (sensor_msgs/Image or '
                                  f'CompressedImage); topics: {listing}')
        with_info = [t for t in cands if _sibling_info(t, infos)]
        if len(with_info) == 1:
            image = with_info[0]
        elif len(cands) == 1:
            image = cands[0]
        else:
            raise BagDatasetError(f'bag {name}: several camera topics {sorted(cands)}; choose one '
                                  '(image_topic / --image-topic)')
    if cfg.camera_info_topic:
        if topics.get(cfg.camera_info_topic) != CAMERA_INFO:
            raise BagDatasetError(f'bag {name}: no CameraInfo topic {cfg.camera_info_topic!r}; '
                                  f'topics: {listing}')
        info = cfg.camera_info_topic
    else:
        info = _sibling_info(image, infos)
        if info is None and not infos and not cfg.require_camera_info:
            log.info('bag %s: no CameraInfo topic; K unknown (NaN): learned intrinsics only', name)
        elif info is None:
            raise BagDatasetError(
                f'bag {name}: no sensor_msgs/CameraInfo for camera topic {image} (looked for '
                f'{", ".join(_info_candidates(image))}); give camera_info_topic / --camera-info-topic. '
                f'Topics: {listing}')
    odom = None
    if cfg.odom_topic:
        if topics.get(cfg.odom_topic) not in (ODOMETRY, TWIST_STAMPED):
            raise BagDatasetError(f'bag {name}: no nav_msgs/Odometry or TwistStamped topic '
                                  f'{cfg.odom_topic!r}; topics: {listing}')
        odom = cfg.odom_topic
    elif cfg.odom_topic is None:
        cands = sorted(t for t, m in topics.items() if m in (ODOMETRY, TWIST_STAMPED)
                       and not t.startswith(excluded))
        if '/odom' in cands:
            odom = '/odom'
        elif len(cands) == 1:
            odom = cands[0]
        elif len(cands) > 1:
            log.warning('bag %s: several odometry topics %s, none used (set odom_topic)', name, cands)
    return image, info, odom


def _info_candidates(image_topic: str):
    parts = [p for p in image_topic.split('/') if p]
    out = []
    for k in range(len(parts) - 1, -1, -1):
        out.append('/' + '/'.join(parts[:k] + ['camera_info']))
    return out


def _sibling_info(image_topic, infos):
    for c in _info_candidates(image_topic):
        if c in infos:
            return c
    return None

