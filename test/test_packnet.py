"""PackNet01: packing/unpacking, output contract, released parameter names/shapes, the released
.ckpt layout (state_dict with model.depth_net. prefix + a pickled yacs-like config) and clear
errors when a checkpoint does not fit."""
import os
import sys
import types

import numpy as np
import pytest
import torch

from depth_ego_ros.core.checkpoints import CheckpointError
from depth_ego_ros.core.networks.packnet import (PackLayer3d, PackNet01, UnpackLayer3d,
                                                 packing, packnet_disp_to_depth, unpacking)
from depth_ego_ros.core.packnet_checkpoint import (extract_depth_state_dict, infer_packnet_args,
                                                   load_packnet_checkpoint, read_packnet_ckpt,
                                                   save_packnet_checkpoint)

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('torch_one_thread')]
H, W = 32, 64


@pytest.fixture(scope='module')
def small():
    torch.manual_seed(0)
    return PackNet01(width=0.25).eval()


# ------------------------------------------------------------------------------------ blocks
def test_packing_is_space_to_depth_and_inverts():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    p = packing(x)
    assert p.shape == (2, 12, 2, 3)
    # channel c*4 + i*2 + j holds pixel (2y+i, 2x+j) of channel c
    for c in range(3):
        for i in range(2):
            for j in range(2):
                assert torch.equal(p[:, c * 4 + i * 2 + j], x[:, c, i::2, j::2])
    assert torch.equal(unpacking(p), x)


def test_pack_and_unpack_layer_shapes():
    torch.manual_seed(0)
    pk = PackLayer3d(16, 3)
    up = UnpackLayer3d(16, 32, 3)
    x = torch.rand(2, 16, 8, 12)
    y = pk(x)
    assert y.shape == (2, 16, 4, 6)
    assert up(y).shape == (2, 32, 8, 12)
    assert pk.conv3d.weight.shape == (8, 1, 3, 3, 3)
    assert pk.conv.conv_base.weight.shape == (16, 16 * 4 * 8, 3, 3)
    assert up.conv.conv_base.weight.shape == (32 * 4 // 8, 16, 3, 3)


# ------------------------------------------------------------------------------------ network
def test_outputs_four_scales_in_unit_interval(small):
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        out = small(x)
    assert sorted(out) == [0, 1, 2, 3]
    for s, d in out.items():
        assert d.shape == (2, 1, H // 2 ** s, W // 2 ** s)
        assert torch.isfinite(d).all() and (d > 0).all() and (d < 1).all()
    # two different images give different depth (the network does look at its input)
    assert not torch.allclose(out[0][0], out[0][1])


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    net = PackNet01(version='B', width=0.25).train()
    out = net(torch.rand(1, 3, H, W))
    sum(d.mean() for d in out.values()).backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad
    assert sum(p.grad.abs().sum() for p in net.parameters()) > 0


def test_disp_to_depth_uses_packnets_inverse_depth_convention(small):
    d = torch.tensor([0.5, 0.25, 1e-6])
    inv, depth = packnet_disp_to_depth(d, min_depth=0.1, max_depth=100.0)
    # inverse depth = sigmoid / 0.5 -> depth 1 m, 2 m; tiny sigmoid clamps at max_depth
    assert torch.allclose(depth, torch.tensor([1.0, 2.0, 100.0]))
    assert torch.allclose(inv * depth, torch.ones(3))
    inv2, depth2 = small.disp_to_depth(d, 0.1, 100.0)
    assert torch.equal(depth2, depth)
    assert np.allclose(packnet_disp_to_depth(np.array([0.5]))[1], [1.0])


def test_bad_inputs_and_arguments_are_clear():
    net = PackNet01(width=0.25)
    with pytest.raises(ValueError, match='multiples of 32'):
        net(torch.rand(1, 3, 40, 64))
    with pytest.raises(ValueError, match=r'\[B,3,H,W\]'):
        net(torch.rand(1, 1, 32, 64))
    with pytest.raises(ValueError, match='version'):
        PackNet01(version='C')
    with pytest.raises(ValueError, match='width'):
        PackNet01(width=0.3)


def test_released_parameter_names_shapes_and_count():
    """The full-width network has the released PackNet01 (version 1A) layout: 128 M parameters,
    and these names/shapes (built on the meta device: no memory, no time)."""
    with torch.device('meta'):
        net = PackNet01('1A', width=1.0)
    sd = net.state_dict()
    expected = {
        'pre_calc.conv_base.weight': (64, 3, 5, 5),
        'pre_calc.normalize.weight': (64,),
        'conv1.conv_base.weight': (64, 64, 7, 7),
        'pack1.conv3d.weight': (8, 1, 3, 3, 3),
        'pack1.conv.conv_base.weight': (64, 64 * 4 * 8, 5, 5),
        'pack5.conv.conv_base.weight': (512, 512 * 4 * 8, 3, 3),
        'conv2.0.conv1.conv_base.weight': (64, 64, 3, 3),
        'conv2.1.conv3.weight': (64, 64, 1, 1),
        'conv5.2.normalize.bias': (512,),
        'unpack5.conv.conv_base.weight': (256, 512, 3, 3),
        'unpack5.conv3d.weight': (8, 1, 3, 3, 3),
        'unpack1.conv.conv_base.weight': (32, 64, 3, 3),
        'iconv5.conv_base.weight': (512, 512 + 256, 3, 3),
        'iconv3.conv_base.weight': (128, 128 + 64 + 1, 3, 3),
        'iconv1.conv_base.weight': (64, 64 + 64 + 1, 3, 3),
        'disp4_layer.conv1.weight': (1, 256, 3, 3),
        'disp1_layer.conv1.bias': (1,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    # shortcut names do not depend on dropout (the release's dropout variant says conv3.0.weight)
    assert not any(k.endswith(('.conv3.0.weight', '.conv3.0.bias')) for k in sd)
    n = sum(p.numel() for p in net.parameters())
    assert abs(n / 1e6 - 128.3) < 0.5                    # the paper: 128 M
    assert all(g.num_groups == 16 for g in net.modules() if isinstance(g, torch.nn.GroupNorm))


# ------------------------------------------------------------------------------------ checkpoints
def _fake_yacs():
    """A stand-in for yacs.config.CfgNode (a dict subclass with attribute state), registered
    under its real module name so that torch.save pickles it as released files do."""
    pkg = types.ModuleType('yacs')
    mod = types.ModuleType('yacs.config')

    class CfgNode(dict):
        def __init__(self, d=None):
            super().__init__(d or {})
            self.__dict__['__immutable__'] = False
            self.__dict__['__deprecated_keys__'] = set()

    CfgNode.__module__ = 'yacs.config'
    CfgNode.__qualname__ = 'CfgNode'
    mod.CfgNode = CfgNode
    return pkg, mod, CfgNode


class _Evil:
    """Pickles as a call of os.system: must never run when a checkpoint is read."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def _write_released(path, net, tmp_path, extra=None, legacy=False):
    pkg, mod, Cfg = _fake_yacs()
    sys.modules['yacs'], sys.modules['yacs.config'] = pkg, mod
    try:
        cfg = Cfg({'model': Cfg({'name': 'SelfSupModel',
                                 'depth_net': Cfg({'name': 'PackNet01', 'version': '1A',
                                                   'dropout': 0.0, 'checkpoint_path': ''}),
                                 'params': Cfg({'min_depth': 0.0, 'max_depth': 80.0})}),
                   'datasets': Cfg({'augmentation': Cfg({'image_shape': (H, W)})}),
                   'evil': _Evil(tmp_path / 'pwned')})
        sd = {f'model.depth_net.{k}': v for k, v in net.state_dict().items()}
        sd['model.pose_net.conv1.0.weight'] = torch.zeros(16, 9, 7, 7)
        sd.update(extra or {})
        torch.save({'config': cfg, 'epoch': 49, 'state_dict': sd}, path,
                   _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules['yacs'], sys.modules['yacs.config']


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy-format'])
def test_released_layout_checkpoint_loads_and_reproduces_outputs(small, tmp_path, legacy):
    path = tmp_path / 'PackNet01_selfsup.ckpt'
    _write_released(path, small, tmp_path, legacy=legacy)
    data = read_packnet_ckpt(path)
    assert not (tmp_path / 'pwned').exists()              # no code from the file ran
    assert data['config']['model']['depth_net'] == {'name': 'PackNet01', 'version': '1A',
                                                    'dropout': 0.0, 'checkpoint_path': ''}
    assert data['config']['datasets']['augmentation']['image_shape'] == [H, W]
    assert data['config']['evil'] == '<posix.system>'      # kept as an inert placeholder
    net, info = load_packnet_checkpoint(path)             # built to fit: width and version inferred
    assert (net.width, net.version) == (0.25, 'A') and not net.training
    assert info['prefix'] == 'model.depth_net.' and info['epoch'] == 49
    assert info['ignored_keys'] == ['model.pose_net.conv1.0.weight']
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        a, b = small(x), net(x)
    for s in range(4):
        assert torch.equal(a[s], b[s])


def test_old_layout_keys_are_mapped(small, tmp_path):
    """.pth.tar-era names: disp_network. prefix and residual shortcuts stored as conv3.0.*"""
    sd = {}
    for k, v in small.state_dict().items():
        k = k.replace('.conv3.weight', '.conv3.0.weight').replace('.conv3.bias', '.conv3.0.bias')
        sd[f'disp_network.{k}'] = v
    torch.save({'state_dict': sd}, tmp_path / 'old.pth.tar')
    net, info = load_packnet_checkpoint(tmp_path / 'old.pth.tar', PackNet01(width=0.25))
    assert info['prefix'] == 'disp_network.' and info['config'] is None
    assert torch.equal(net.state_dict()['conv2.0.conv3.weight'], small.state_dict()['conv2.0.conv3.weight'])


def test_save_then_load_round_trip_weights_only(small, tmp_path):
    path = save_packnet_checkpoint(small, tmp_path / 'ours.ckpt', epoch=3)
    raw = torch.load(path, map_location='cpu', weights_only=True)   # plain data: no stubs needed
    assert raw['config']['model']['depth_net']['name'] == 'PackNet01'
    assert all(k.startswith('model.depth_net.') for k in raw['state_dict'])
    net, info = load_packnet_checkpoint(path)
    assert info['args'] == {'width': 0.25, 'd': 8, 'min_depth': 0.5, 'version': '1A'}
    assert all(torch.equal(v, small.state_dict()[k]) for k, v in net.state_dict().items())


def test_mismatched_checkpoint_gives_clear_error(small, tmp_path):
    sd = {f'model.depth_net.{k}': v for k, v in small.state_dict().items()}
    del sd['model.depth_net.disp1_layer.conv1.bias']
    sd['model.depth_net.iconv1.conv_base.weight'] = torch.zeros(16, 99, 3, 3)
    sd['model.depth_net.extra_layer.weight'] = torch.zeros(1)
    torch.save({'state_dict': sd, 'config': {'model': {'depth_net': {'name': 'PackNet01'}}}},
               tmp_path / 'bad.ckpt')
    with pytest.raises(CheckpointError) as ei:
        load_packnet_checkpoint(tmp_path / 'bad.ckpt', PackNet01(width=0.25))
    msg = str(ei.value)
    assert 'bad.ckpt' in msg
    assert 'missing keys (1): model.depth_net.disp1_layer.conv1.bias' in msg
    assert 'unexpected keys (1): model.depth_net.extra_layer.weight' in msg
    assert 'model.depth_net.iconv1.conv_base.weight: checkpoint (16, 99, 3, 3) vs network (16, 33, 3, 3)' in msg


def test_width_mismatch_error_names_the_checkpoint_width(small, tmp_path):
    path = save_packnet_checkpoint(small, tmp_path / 'w025.ckpt')
    with pytest.raises(CheckpointError, match=r"looks like PackNet01\(.*width=0.25"):
        load_packnet_checkpoint(path, PackNet01(width=0.5))


def test_other_networks_and_junk_are_refused(tmp_path):
    torch.save({'state_dict': {'model.depth_net.encoder.conv1.weight': torch.zeros(1)},
                'config': {'model': {'depth_net': {'name': 'DepthResNet', 'version': '18pt'}}}},
               tmp_path / 'resnet.ckpt')
    with pytest.raises(CheckpointError, match="'DepthResNet'.*only 'PackNet01'"):
        load_packnet_checkpoint(tmp_path / 'resnet.ckpt')
    torch.save({'state_dict': {'model.pose_net.x': torch.zeros(1)}}, tmp_path / 'pose_only.ckpt')
    with pytest.raises(CheckpointError, match='no depth-network keys'):
        load_packnet_checkpoint(tmp_path / 'pose_only.ckpt')
    (tmp_path / 'junk.ckpt').write_bytes(b'not a torch file')
    with pytest.raises(CheckpointError, match='junk.ckpt'):
        load_packnet_checkpoint(tmp_path / 'junk.ckpt')
    with pytest.raises(CheckpointError, match='not found'):
        load_packnet_checkpoint(tmp_path / 'missing.ckpt')


def test_infer_args_from_state_dict_shapes():
    with torch.device('meta'):
        b = PackNet01('B', width=0.5).state_dict()
    sd, prefix, ignored = extract_depth_state_dict({f'model.depth_net.{k}': v for k, v in b.items()})
    assert prefix == 'model.depth_net.' and not ignored
    assert infer_packnet_args(sd) == {'width': 0.5, 'd': 8, 'version': 'B'}


def test_exports_to_onnx_with_the_project_exporter(small, tmp_path):
    """The Estimator's CPU backend runs ONNX Runtime: PackNet01 (3-D convolutions, pixel
    (un)shuffle, GroupNorm) exports with the project's exporter and matches eager torch."""
    ort = pytest.importorskip('onnxruntime')
    from depth_ego_ros.core.export import export_onnx

    class Finest(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net(image)[0]
    x = torch.rand(1, 3, H, W)
    path = export_onnx(Finest(small), x, tmp_path / 'packnet.onnx', 'image', ['disp'])
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    y = sess.run(None, {'image': x.numpy()})[0]
    with torch.no_grad():
        ref = small(x)[0].numpy()
    assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-4
