"""Checkpoints in monodepth2's layout: round trip, metadata, clear errors."""
import pickle

import pytest
import torch

from depth_ego_ros.core import checkpoints as ckpt
from depth_ego_ros.core.models import build_networks

pytestmark = pytest.mark.timeout(120)
torch.set_num_threads(2)


def _save(directory, depth_net, pose_net, **kw):
    return ckpt.save_monodepth2(directory, depth_net.encoder, depth_net.decoder,
                                pose_net.encoder if pose_net else None,
                                pose_net.decoder if pose_net else None,
                                height=kw.get('height', 64), width=kw.get('width', 128),
                                use_stereo=kw.get('use_stereo', False))


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp('ckpt')
    depth_net, pose_net, _ = build_networks('resnet18', seed=123)
    _save(d, depth_net, pose_net, use_stereo=True)
    return d, depth_net, pose_net


def test_round_trip_gives_identical_outputs(saved):
    d, depth_net, pose_net = saved
    assert sorted(p.name for p in d.iterdir()) == ['depth.pth', 'encoder.pth', 'pose.pth',
                                                   'pose_encoder.pth']
    loaded_depth, loaded_pose, meta = build_networks('resnet18', checkpoint=d, seed=7)
    assert meta == {'height': 64, 'width': 128, 'use_stereo': True}
    x = torch.rand(1, 3, 64, 128)
    pair = torch.rand(1, 6, 64, 128)
    with torch.no_grad():
        assert torch.equal(depth_net(x), loaded_depth(x))
        for a, b in zip(pose_net(pair), loaded_pose(pair)):
            assert torch.equal(a, b)
        # and a differently seeded random net really differs (the load did something)
        fresh, _, _ = build_networks('resnet18', seed=7)
        assert not torch.equal(fresh(x), depth_net(x))


def test_encoder_file_is_monodepth2_layout(saved):
    d, _, _ = saved
    enc = torch.load(d / 'encoder.pth', weights_only=True)
    assert enc['height'] == 64 and enc['width'] == 128 and enc['use_stereo'] is True
    assert enc['encoder.conv1.weight'].shape == (64, 3, 7, 7)
    assert torch.load(d / 'pose_encoder.pth', weights_only=True)['encoder.conv1.weight'].shape == (64, 6, 7, 7)
    assert 'decoder.13.conv.weight' in torch.load(d / 'depth.pth', weights_only=True)
    assert 'net.3.weight' in torch.load(d / 'pose.pth', weights_only=True)
    assert ckpt.read_encoder_meta(d) == {'height': 64, 'width': 128, 'use_stereo': True,
                                         'num_layers': 18}
    assert ckpt.has_pose(d)


def test_wrong_shape_fails_with_clear_message(saved, tmp_path):
    d, depth_net, pose_net = saved
    _save(tmp_path, depth_net, pose_net)
    sd = torch.load(tmp_path / 'depth.pth', weights_only=True)
    sd['decoder.10.conv.weight'] = torch.zeros(1, 8, 3, 3)
    torch.save(sd, tmp_path / 'depth.pth')
    with pytest.raises(ckpt.CheckpointError) as info:
        build_networks('resnet18', checkpoint=tmp_path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(tmp_path / 'depth.pth') in msg
    assert 'shape mismatches (1)' in msg
    assert 'decoder.10.conv.weight: checkpoint (1, 8, 3, 3) vs network (1, 16, 3, 3)' in msg


def test_missing_and_unexpected_keys_are_listed(saved, tmp_path):
    d, depth_net, pose_net = saved
    _save(tmp_path, depth_net, pose_net)
    sd = torch.load(tmp_path / 'pose.pth', weights_only=True)
    del sd['net.2.bias']
    sd['net.9.weight'] = torch.zeros(3)
    torch.save(sd, tmp_path / 'pose.pth')
    with pytest.raises(ckpt.CheckpointError) as info:
        build_networks('resnet18', checkpoint=tmp_path)
    msg = str(info.value)
    assert 'pose.pth' in msg
    assert 'missing keys (1): net.2.bias' in msg
    assert 'unexpected keys (1): net.9.weight' in msg


def test_wrong_model_gets_a_hint(saved, tmp_path):
    d, depth_net, pose_net = saved
    _save(tmp_path, depth_net, pose_net)
    sd = torch.load(tmp_path / 'encoder.pth', weights_only=True)
    sd['encoder.layer1.0.conv3.weight'] = torch.zeros(256, 64, 1, 1)   # a bottleneck (resnet50) key
    torch.save(sd, tmp_path / 'encoder.pth')
    with pytest.raises(ckpt.CheckpointError, match="model='resnet50'"):
        build_networks('resnet18', checkpoint=tmp_path)


def test_optional_keys_may_be_absent(saved, tmp_path):
    """Checkpoints without the unused ResNet fc head or BN counters still load."""
    d, depth_net, pose_net = saved
    _save(tmp_path, depth_net, None)
    sd = torch.load(tmp_path / 'encoder.pth', weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.startswith('encoder.fc.')
          and not k.endswith('num_batches_tracked')}
    torch.save(sd, tmp_path / 'encoder.pth')
    net, pose, meta = build_networks('resnet18', checkpoint=tmp_path)
    assert pose is None          # depth-only checkpoint
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x), depth_net(x))


class _NotAllowed:
    pass


def test_unreadable_files(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match='not found'):
        ckpt.read_state_dict(tmp_path / 'nope.pth')
    with pytest.raises(ckpt.CheckpointError, match='checkpoint directory not found'):
        build_networks('resnet18', checkpoint=tmp_path / 'nodir')
    # weights_only=True refuses arbitrary pickled objects
    with open(tmp_path / 'evil.pth', 'wb') as f:
        pickle.dump({'x': _NotAllowed()}, f, protocol=2)
    with pytest.raises(ckpt.CheckpointError, match='evil.pth.*weights-only'):
        ckpt.read_state_dict(tmp_path / 'evil.pth')
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(ckpt.CheckpointError, match='expected a state dict'):
        ckpt.read_state_dict(tmp_path / 'list.pth')
    (tmp_path / 'junk.pth').write_bytes(b'not a torch file')
    with pytest.raises(ckpt.CheckpointError, match='junk.pth'):
        ckpt.read_state_dict(tmp_path / 'junk.pth')


def test_intrinsics_head_roundtrip_and_bottleneck_check(tmp_path):
    from depth_ego_ros.core.networks.intrinsics_head import IntrinsicsHead
    torch.manual_seed(0)
    head = IntrinsicsHead(256, init_focal=0.8)
    ckpt.save_intrinsics_head(tmp_path, head, running={'value': [1.0, 2.0, 3.0, 4.0], 'count': 5})
    loaded = IntrinsicsHead(256)
    extras = ckpt.load_intrinsics_head(loaded, tmp_path / ckpt.INTRINSICS_FILE)
    assert extras['running_value'] == [1.0, 2.0, 3.0, 4.0] and extras['in_channels'] == 256
    for a, b in zip(head.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ckpt.CheckpointError, match='256-channel bottleneck, the pose network has 512'):
        ckpt.load_intrinsics_head(IntrinsicsHead(512), tmp_path / ckpt.INTRINSICS_FILE)
