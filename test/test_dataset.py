"""Training triplets from rosbag2 bags: intrinsics, static frames, odometry distances,
augmentation, held-out split, Image and CompressedImage bags, clear errors."""
import io

import numpy as np
import pytest
import torch

from depth_ego_ros.core.geometry import intrinsics_for_resize
from depth_ego_ros.data.dataset import (BagDatasetError, BagTripletDataset, DatasetConfig,
                                        load_bag_sequences, split_sequences)
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
from depth_ego_ros.data.synth_bag import SynthTopics, write_synth_bag

pytestmark = pytest.mark.usefixtures('torch_one_thread')

BAG_W, BAG_H = 96, 32


NET = dict(width=64, height=24)


@pytest.fixture(scope='module')
def synth(tmp_path_factory):
    """120 frames (12 s): the trajectory has at least one stop (identical frames)."""
    world = SyntheticWorld(SynthConfig(frames=120, seed=0, width=BAG_W, height=BAG_H))
    out = tmp_path_factory.mktemp('ds') / 'drive_a'
    write_synth_bag(world, out)
    return world, out


def _cfg(**kw):
    return DatasetConfig(**{**NET, **kw})


@pytest.mark.timeout(60)
def test_samples_shapes_intrinsics_and_pixels(synth):
    from PIL import Image
    world, bag = synth
    ds = BagTripletDataset(bag, _cfg(augment=False))
    assert len(ds) > 50
    s = ds[10]
    assert s['image'].shape == (3, 24, 64) and s['image'].dtype == torch.float32
    assert s['sources'].shape == (2, 3, 24, 64) and s['sources_aug'].shape == (2, 3, 24, 64)
    assert 0.0 <= s['image'].min() and s['image'].max() <= 1.0
    K_expected = intrinsics_for_resize(world.K, (BAG_W, BAG_H), (64, 24))
    assert np.allclose(s['K'].numpy(), K_expected, atol=1e-5)
    # the target is the world's frame at that stamp, resized
    i = int(np.argmin(np.abs(world.stamps - s['stamp'].item())))
    assert abs(world.stamps[i] - s['stamp'].item()) < 1e-6
    ref = np.asarray(Image.fromarray(world.frame(i).rgb).resize((64, 24), Image.LANCZOS))
    assert np.array_equal((s['image'].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), ref)
    assert torch.equal(s['image'], s['image_aug'])           # augment=False
    assert torch.allclose(s['dt'], torch.tensor([-0.1, 0.1]), atol=1e-6)


@pytest.mark.timeout(60)
def test_static_frames_skipped_with_odometry(synth):
    world, bag = synth
    (seq,) = load_bag_sequences(bag, _cfg())
    moving = world.speeds >= 0.05
    assert (~moving).sum() >= 5                              # the drive does stop
    kept = np.array([int(np.argmin(np.abs(world.stamps - t))) for t in seq.stamps])
    expected = np.nonzero(moving | (np.arange(len(moving)) == 0))[0]
    assert np.array_equal(kept, expected)
    assert seq.dropped_static == len(world) - len(expected)
    # without skipping every frame is there
    (all_seq,) = load_bag_sequences(bag, _cfg(skip_static=False))
    assert len(all_seq) == len(world)


@pytest.mark.timeout(60)
def test_static_frames_skipped_by_image_difference_without_odometry(synth):
    world, bag = synth
    (seq,) = load_bag_sequences(bag, _cfg(odom_topic=''))
    assert np.isnan(seq.speed).all() and np.isnan(seq.distance).all()
    P = world.T_world_cam
    still = np.linalg.norm(P[1:, :3, 3] - P[:-1, :3, 3], axis=1) < 1e-9   # frame i+1 == frame i
    assert len(seq) <= len(world) - still.sum()
    diffs = np.abs(np.diff(seq.images.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert diffs.min() > 0                                   # no duplicate frames left
    ds = BagTripletDataset(bag, _cfg(odom_topic='', augment=False))
    assert torch.isnan(ds[3]['distance']).all() and not ds.has_odometry


@pytest.mark.timeout(60)
def test_odometry_distance_matches_ground_truth_motion(synth):
    world, bag = synth
    ds = BagTripletDataset(bag, _cfg(augment=False))
    assert ds.has_odometry
    P = world.T_world_cam
    for k in (5, 30, len(ds) - 3):
        s = ds[k]
        idx = [int(np.argmin(np.abs(world.stamps - (s['stamp'].item() + dt)))) for dt in [0.0] + s['dt'].tolist()]
        gt = [np.linalg.norm(P[j, :3, 3] - P[idx[0], :3, 3]) for j in idx[1:]]
        assert np.allclose(s['distance'].numpy(), gt, rtol=0.03, atol=0.01)
        assert np.isclose(s['speed'].item(), world.speeds[idx[0]], rtol=0.02, atol=0.02)


@pytest.mark.timeout(60)
def test_flip_and_colour_augmentation(synth):
    _, bag = synth
    plain = BagTripletDataset(bag, _cfg(augment=False))
    flip = BagTripletDataset(bag, _cfg(flip_probability=1.0, color_probability=0.0))
    a, b = plain[7], flip[7]
    assert b['flipped'] and torch.equal(b['image'], a['image'].flip(-1))
    assert torch.equal(b['sources'], a['sources'].flip(-1))
    assert torch.isclose(b['K'][0, 2], 63 - a['K'][0, 2]) and torch.equal(b['K'][1], a['K'][1])
    colour = BagTripletDataset(bag, _cfg(flip_probability=0.0, color_probability=1.0))
    torch.manual_seed(0)
    c = colour[7]
    torch.manual_seed(0)
    c2 = colour[7]
    assert torch.equal(c['image_aug'], c2['image_aug'])      # reproducible from torch's seed
    assert torch.equal(c['image'], a['image'])               # the loss targets stay clean
    assert not torch.allclose(c['image_aug'], a['image'])
    assert c['image_aug'].min() >= 0 and c['image_aug'].max() <= 1
    # one jitter for the whole sample: identical frames (a stop, skip_static off) stay identical
    still = BagTripletDataset(bag, _cfg(skip_static=False, flip_probability=0.0, color_probability=1.0))
    j = next(k for k in range(len(still))
             if torch.equal(still[k]['sources'][0], still[k]['image'])
             and torch.equal(still[k]['sources'][1], still[k]['image']))
    s = still[j]
    assert torch.equal(s['sources_aug'][0], s['image_aug']) and torch.equal(s['sources_aug'][1], s['image_aug'])


@pytest.mark.timeout(60)
def test_batches_collate(synth):
    _, bag = synth
    ds = BagTripletDataset(bag, _cfg())
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)))
    assert batch['image'].shape == (4, 3, 24, 64) and batch['sources'].shape == (4, 2, 3, 24, 64)
    assert batch['K'].shape == (4, 3, 3) and batch['distance'].shape == (4, 2)
    assert len(batch['sequence']) == 4


@pytest.mark.timeout(120)
def test_held_out_split_is_by_sequence_and_deterministic(synth, tmp_path):
    _, bag_a = synth
    bags = [bag_a]
    for seed, name in ((1, 'drive_b'), (2, 'drive_c')):
        out = tmp_path / name
        write_synth_bag(SyntheticWorld(SynthConfig(frames=12, seed=seed, width=BAG_W, height=BAG_H)), out,
                        ground_truth=False)
        bags.append(out)
    cfg = _cfg(val_fraction=0.3)
    train = BagTripletDataset(bags, cfg, split='train')
    val = BagTripletDataset(bags, cfg, split='val')
    tn = {s.name for s in train.sequences}
    vn = {s.name for s in val.sequences}
    assert tn and vn and not (tn & vn) and tn | vn == {'drive_a', 'drive_b', 'drive_c'}
    assert not val.augment and train.augment
    val_rev = BagTripletDataset(list(reversed(bags)), cfg, split='val')
    assert {s.name for s in val_rev.sequences} == vn          # independent of the order given
    # one bag: split in time, with a gap, so no triplet shares a frame across the parts
    (seq,) = load_bag_sequences(bag_a, cfg)
    tr, va = split_sequences([seq], 0.2)
    assert tr[0].stamps[-1] < va[0].stamps[0]
    assert len(tr[0]) + len(va[0]) == len(seq) - 1
    one_train = BagTripletDataset(bag_a, cfg, split='train')
    one_val = BagTripletDataset(bag_a, cfg, split='val')
    t_stamps = {round(float(s), 6) for sq in one_train.sequences for s in sq.stamps}
    v_stamps = {round(float(s), 6) for sq in one_val.sequences for s in sq.stamps}
    assert not (t_stamps & v_stamps)


# ---------------------------------------------------------------------------------- other bags
def _typestore():
    from rosbags.typesys import Stores, get_typestore
    return get_typestore(Stores.ROS2_KILTED)


def _header(ts, t_ns, frame='cam'):
    T = ts.types
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](sec=t_ns // 10**9, nanosec=t_ns % 10**9),
                                    frame_id=frame)


@pytest.mark.timeout(60)
def test_compressed_image_bag_with_camera_info_in_parent_namespace(tmp_path):
    """A recorder-style bag: /cam/image_raw/compressed (PNG) + /cam/camera_info, no odometry."""
    from PIL import Image
    from rosbags.rosbag2 import StoragePlugin, Writer
    world = SyntheticWorld(SynthConfig(frames=6, seed=4, width=BAG_W, height=BAG_H))
    ts = _typestore()
    T = ts.types
    out = tmp_path / 'compressed'
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        ci = w.add_connection('/cam/image_raw/compressed', 'sensor_msgs/msg/CompressedImage', typestore=ts)
        cc = w.add_connection('/cam/camera_info', 'sensor_msgs/msg/CameraInfo', typestore=ts)
        t0 = 1_000_000_000_000
        roi = T['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        info = T['sensor_msgs/msg/CameraInfo'](
            header=_header(ts, t0), height=BAG_H, width=BAG_W, distortion_model='plumb_bob',
            d=np.zeros(5), k=world.K.reshape(-1), r=np.eye(3).reshape(-1),
            p=np.hstack([world.K, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0, roi=roi)
        w.write(cc, t0, ts.serialize_cdr(info, 'sensor_msgs/msg/CameraInfo'))   # camera_info once
        for i, f in enumerate(world.frames()):
            buf = io.BytesIO()
            Image.fromarray(f.rgb).save(buf, format='PNG')
            t = t0 + i * 100_000_000
            msg = T['sensor_msgs/msg/CompressedImage'](header=_header(ts, t), format='png',
                                                       data=np.frombuffer(buf.getvalue(), np.uint8))
            w.write(ci, t, ts.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage'))
    ds = BagTripletDataset(out, DatasetConfig(width=BAG_W, height=BAG_H, augment=False))
    s = ds[0]
    assert np.allclose(s['K'].numpy(), world.K)
    assert torch.isnan(s['distance']).all()
    i = int(round((s['stamp'].item() - 1000.0) / 0.1))
    assert np.array_equal((s['image'].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), world.frame(i).rgb)


@pytest.mark.timeout(60)
def test_clear_errors(synth, tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    _, bag = synth
    with pytest.raises(BagDatasetError, match='does not exist'):
        BagTripletDataset(tmp_path / 'nope', _cfg())
    # a bag without any camera topic
    ts = _typestore()
    out = tmp_path / 'no_camera'
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection('/chatter', 'std_msgs/msg/String', typestore=ts)
        w.write(c, 1, ts.serialize_cdr(ts.types['std_msgs/msg/String'](data='hi'), 'std_msgs/msg/String'))
    with pytest.raises(BagDatasetError, match=r'no_camera: no camera image topic.*/chatter'):
        BagTripletDataset(out, _cfg())
    # a named camera topic that is not there
    with pytest.raises(BagDatasetError, match="no camera topic '/front/image'"):
        BagTripletDataset(bag, _cfg(image_topic='/front/image'))
    # a camera without camera_info
    world = SyntheticWorld(SynthConfig(frames=4, seed=1, width=BAG_W, height=BAG_H))
    no_info = tmp_path / 'no_info'
    write_synth_bag(world, no_info, topics=SynthTopics(camera_info='/calibration/info'), ground_truth=False)
    with pytest.raises(BagDatasetError, match=r'no sensor_msgs/CameraInfo for camera topic /camera/image_raw'):
        BagTripletDataset(no_info, _cfg())
    # ...which works once the CameraInfo topic is named
    assert len(BagTripletDataset(no_info, _cfg(camera_info_topic='/calibration/info', skip_static=False))) == 2
    with pytest.raises(ValueError, match='frame_offsets'):
        DatasetConfig(frame_offsets=(0, 1))


# ----------------------------------------------------------------------------------------------
# instance masks (moving objects)
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def movers(tmp_path_factory):
    world = SyntheticWorld(SynthConfig(frames=14, seed=0, width=128, height=48, supersample=1,
                                       moving_objects=3))
    out = tmp_path_factory.mktemp('dsm') / 'movers'
    write_synth_bag(world, out)
    return world, out


@pytest.mark.timeout(60)
def test_instance_masks_aligned_flipped_and_collated(movers, synth):
    world, bag = movers
    # bag resolution: the masks are exactly the world's ids, slot by slot
    ds = BagTripletDataset(bag, DatasetConfig(width=128, height=48, augment=False, max_objects=4))
    n_obj = 0
    for k in (0, 3, len(ds) - 1):
        s = ds[k]
        assert s['instance_masks'].shape == (4, 48, 128) and s['instance_masks'].dtype == torch.float32
        assert s['source_instance_masks'].shape == (2, 4, 48, 128) and s['instance_ids'].shape == (4,)
        i = int(np.argmin(np.abs(world.stamps - s['stamp'].item())))
        ids_t = world.frame(i).instance_mask
        ids_s = [world.frame(i + o).instance_mask for o in (-1, 1)]
        for slot, oid in enumerate(s['instance_ids'].tolist()):
            want_t = (ids_t == oid) if oid > 0 else np.zeros_like(ids_t, bool)
            assert np.array_equal(s['instance_masks'][slot].numpy() > 0, want_t)
            for j in range(2):
                want = (ids_s[j] == oid) if oid > 0 else np.zeros_like(ids_t, bool)
                assert np.array_equal(s['source_instance_masks'][j, slot].numpy() > 0, want)
        present = [o for o in s['instance_ids'].tolist() if o > 0]
        assert sorted(present) == sorted(int(o) for o in np.unique(ids_t) if o > 0)[:4] or len(present) == 4
        areas = [(ids_t == o).sum() for o in present]
        assert areas == sorted(areas, reverse=True)                      # largest first
        n_obj += len(present)
    assert n_obj >= 3
    # network resolution: nearest neighbour at pixel centres (half size -> odd rows/columns)
    half = BagTripletDataset(bag, DatasetConfig(width=64, height=24, augment=False, max_objects=4))
    s = half[3]
    i = int(np.argmin(np.abs(world.stamps - s['stamp'].item())))
    ids = world.frame(i).instance_mask[1::2, 1::2]
    for slot, oid in enumerate(s['instance_ids'].tolist()):
        if oid:
            assert np.array_equal(s['instance_masks'][slot].numpy() > 0, ids == oid)
    # flipped with the images
    flip = BagTripletDataset(bag, DatasetConfig(width=64, height=24, max_objects=4, flip_probability=1.0,
                                                color_probability=0.0))
    f = flip[3]
    assert f['flipped'] and torch.equal(f['image'], s['image'].flip(-1))
    assert torch.equal(f['instance_masks'], s['instance_masks'].flip(-1))
    assert torch.equal(f['source_instance_masks'], s['source_instance_masks'].flip(-1))
    assert torch.equal(f['instance_ids'], s['instance_ids'])
    # batches collate (fixed M), and the camera topic is still found (the mask topic is not a camera)
    batch = next(iter(torch.utils.data.DataLoader(half, batch_size=3)))
    assert batch['instance_masks'].shape == (3, 4, 24, 64)
    assert batch['source_instance_masks'].shape == (3, 2, 4, 24, 64)
    # off, and bags without a mask topic: no mask keys at all
    off = BagTripletDataset(bag, DatasetConfig(width=64, height=24, augment=False, mask_topic=''))
    assert 'instance_masks' not in off[3] and torch.equal(off[3]['image'], s['image'])
    plain = BagTripletDataset(synth[1], _cfg(augment=False))
    assert not {'instance_masks', 'source_instance_masks', 'instance_ids'} & set(plain[0])
    with pytest.raises(BagDatasetError, match='mask topic'):
        BagTripletDataset(synth[1], _cfg(mask_topic='/camera/instance_mask'))
