"""Rotation supervision from the odometry's yaw rate (``yaw_rate_weight``): the dataset's
per-source yaw is the camera's true turn (checked against the synthetic world's poses, sign of
flipped samples included), the loss is zero for the right turn and ignores missing odometry,
and training with it drives the pose network's yaw error down."""
import math

import numpy as np
import pytest
import torch

from depth_ego_ros.core.losses import camera_yaw, yaw_rate_loss
from depth_ego_ros.core.geometry.poses import pose_vec_to_mat
from depth_ego_ros.data.dataset import BagTripletDataset
from depth_ego_ros.data.dataset_config import DatasetConfig
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld
from depth_ego_ros.data.synth_bag import write_synth_bag
from depth_ego_ros.training.config import TrainConfig, TrainConfigError
from depth_ego_ros.training.trainer import Trainer

W, H = 64, 64


def _rot_y(a):
    T = torch.eye(4)
    T[0, 0] = T[2, 2] = math.cos(a)
    T[0, 2], T[2, 0] = math.sin(a), -math.sin(a)
    return T


def test_camera_yaw_and_loss():
    angles = torch.tensor([[0.03, -0.02], [0.0, 0.1]])
    T = torch.stack([torch.stack([_rot_y(float(a)) for a in row]) for row in angles])
    T[..., :3, 3] = torch.tensor([0.1, 0.0, 0.6])                  # translation does not matter
    assert torch.allclose(camera_yaw(T), angles, atol=1e-6)
    assert float(yaw_rate_loss(T, angles)) == pytest.approx(0.0, abs=1e-6)
    wrong = angles + torch.tensor([[0.01, 0.0], [float('nan'), 0.0]])
    # the NaN entry (no odometry) is ignored: mean |err| over the 3 valid entries
    assert float(yaw_rate_loss(T, wrong)) == pytest.approx(0.01 / 3, rel=1e-4)
    assert float(yaw_rate_loss(T, torch.full((2, 2), float('nan')))) == 0.0
    # a rotation about x (pitch) is not yaw
    pitch = pose_vec_to_mat(torch.tensor([[0.05, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.5]]))
    assert abs(float(camera_yaw(pitch))) < 1e-6
    with pytest.raises(ValueError):
        yaw_rate_loss(T, angles[:, :1])


@pytest.fixture(scope='module')
def turning(tmp_path_factory):
    """A drive with turns (seed 1) and its bag."""
    world = SyntheticWorld(SynthConfig(frames=40, width=W, height=H, seed=1, supersample=1))
    path = tmp_path_factory.mktemp('yaw_data') / 'drive'
    write_synth_bag(world, path)
    return world, path


def test_dataset_yaw_is_the_camera_turn(turning):
    world, bag = turning
    ds = BagTripletDataset([str(bag)], DatasetConfig(width=W, height=H), augment=False)
    seq = ds.sequences[0]
    assert seq.heading is not None and np.isfinite(seq.heading).all()
    got, want = [], []
    for i in range(len(ds)):
        b = ds[i]
        _, t = ds.index[i]
        f = [int(np.argmin(np.abs(world.stamps - seq.stamps[t + o]))) for o in (0, -1, 1)]
        T = torch.stack([torch.from_numpy(world.relative_pose(f[k], f[0])).float() for k in (1, 2)])
        got.append(b['yaw'].numpy())
        want.append(camera_yaw(T).numpy())
    got, want = np.array(got), np.array(want)
    assert np.abs(want).max() > 5e-3                               # the drive does turn
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    # a flipped sample turns the other way
    flip = BagTripletDataset([str(bag)], DatasetConfig(width=W, height=H, flip_probability=1.0,
                                                       color_probability=0.0), augment=True)
    b = flip[5]
    assert b['flipped'] and torch.allclose(b['yaw'], -ds[5]['yaw'])


def test_training_with_yaw_supervision_learns_the_turns(turning, tmp_path):
    _, bag = turning
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(bags=[str(bag)], out=str(tmp_path / 'yaw'), width=W, height=H,
                          batch_size=4, epochs=6, lr=1e-3, val_fraction=0.0, augment=False,
                          progress=False, tensorboard=False, image_every=0, seed=0, scales=(0,),
                          odometry_warp_steps=-1, yaw_rate_weight=10.0)
        tr = Trainer(cfg)
        assert any('yaw-rate supervision' in note for note in tr.init_notes)
        s = tr.fit()
    finally:
        torch.set_num_threads(n)
    errs = [h['train']['yaw_error_deg'] for h in s['history']]
    assert all(math.isfinite(e) for e in errs) and 'yaw' in s['history'][0]['train']
    assert min(errs[-2:]) < 0.5 * errs[0], errs
    with pytest.raises(TrainConfigError, match='yaw_rate_weight'):
        TrainConfig(bags=[str(bag)], out=str(tmp_path / 'x'), yaw_rate_weight=-1.0).validate()
