"""Networks: shapes, monodepth2 parameter names/shapes, normalisation, first-conv handling."""
import numpy as np
import pytest
import torch
import torchvision

from depth_ego_ros.core.networks.depth_decoder import DepthDecoder, disp_to_depth
from depth_ego_ros.core.networks.pose_decoder import PoseDecoder
from depth_ego_ros.core.networks.resnet_encoder import (
    NUM_CH_ENC, ResnetEncoder, expand_first_conv, parse_num_layers)

pytestmark = pytest.mark.timeout(120)
torch.set_num_threads(2)


@pytest.fixture(scope='module')
def enc18():
    torch.manual_seed(0)
    return ResnetEncoder(18).eval()


def test_resnet18_features_shapes(enc18):
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        feats = enc18(x)
    assert enc18.num_ch_enc == [64, 64, 128, 256, 512]
    assert [tuple(f.shape) for f in feats] == [
        (2, 64, 32, 64), (2, 64, 16, 32), (2, 128, 8, 16), (2, 256, 4, 8), (2, 512, 2, 4)]


def test_resnet50_channels_and_shapes():
    enc = ResnetEncoder('resnet50').eval()
    assert enc.num_ch_enc == [64, 256, 512, 1024, 2048] == NUM_CH_ENC[50]
    with torch.no_grad():
        feats = enc(torch.rand(1, 3, 32, 64))
    assert [f.shape[1] for f in feats] == enc.num_ch_enc
    assert feats[-1].shape[-2:] == (1, 2)
    # bottleneck blocks: monodepth2's resnet50 encoder has conv3 in every block
    assert 'encoder.layer1.0.conv3.weight' in enc.state_dict()


def test_encoder_parameter_names_are_torchvision_names_under_encoder():
    """monodepth2's encoder.pth keys are torchvision's ResNet keys prefixed with 'encoder.'."""
    tv = torchvision.models.resnet18(weights=None).state_dict()
    ours = ResnetEncoder(18).state_dict()
    assert set(ours) == {f'encoder.{k}' for k in tv}
    for k, v in tv.items():
        assert ours[f'encoder.{k}'].shape == v.shape
    pose = ResnetEncoder(18, num_input_images=2).state_dict()
    assert set(pose) == set(ours)
    assert pose['encoder.conv1.weight'].shape == (64, 6, 7, 7)


def test_input_normalisation_is_monodepth2s(enc18):
    x = torch.rand(1, 3, 64, 64)
    e = enc18.encoder
    with torch.no_grad():
        expected = e.relu(e.bn1(e.conv1((x - 0.45) / 0.225)))
        assert torch.allclose(enc18(x)[0], expected, atol=1e-6)


def test_first_conv_repeated_and_divided_for_stacked_frames():
    """With ImageNet-style weights, N identical stacked frames give the single-frame features."""
    torch.manual_seed(1)
    single = torchvision.models.resnet18(weights=None)
    sd = single.state_dict()
    enc1 = ResnetEncoder(18, 1, imagenet_state_dict=sd).eval()
    enc3 = ResnetEncoder(18, 3, imagenet_state_dict=sd).eval()
    w = enc3.state_dict()['encoder.conv1.weight']
    assert w.shape == (64, 9, 7, 7)
    assert torch.allclose(w[:, 3:6], sd['conv1.weight'] / 3)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        f1 = enc1(x)[-1]
        f3 = enc3(torch.cat([x, x, x], 1))[-1]
    assert torch.allclose(f1, f3, atol=1e-4)
    with pytest.raises(ValueError, match='first-conv'):
        expand_first_conv(torch.zeros(64, 6, 7, 7), 2)


def test_bad_model_names():
    assert parse_num_layers('ResNet50') == 50
    with pytest.raises(ValueError, match='resnet18'):
        parse_num_layers('resnet34')
    with pytest.raises(ValueError, match='num_input_images'):
        ResnetEncoder(18, num_input_images=0)


def test_depth_decoder_keys_and_shapes_match_monodepth2():
    """depth.pth layout: decoder.0..9 = upconv (4,0),(4,1),...,(0,1); decoder.10..13 = dispconv 0..3."""
    dec = DepthDecoder(NUM_CH_ENC[18])
    sd = dec.state_dict()
    expected = {
        'decoder.0.conv.conv.weight': (256, 512, 3, 3),   # upconv(4,0)
        'decoder.1.conv.conv.weight': (256, 512, 3, 3),   # upconv(4,1): 256 + skip 256
        'decoder.2.conv.conv.weight': (128, 256, 3, 3),   # upconv(3,0)
        'decoder.3.conv.conv.weight': (128, 256, 3, 3),   # upconv(3,1): 128 + 128
        'decoder.4.conv.conv.weight': (64, 128, 3, 3),
        'decoder.5.conv.conv.weight': (64, 128, 3, 3),    # 64 + 64
        'decoder.6.conv.conv.weight': (32, 64, 3, 3),
        'decoder.7.conv.conv.weight': (32, 96, 3, 3),     # 32 + 64
        'decoder.8.conv.conv.weight': (16, 32, 3, 3),
        'decoder.9.conv.conv.weight': (16, 16, 3, 3),     # no skip at level 0
        'decoder.10.conv.weight': (1, 16, 3, 3),          # dispconv 0
        'decoder.11.conv.weight': (1, 32, 3, 3),
        'decoder.12.conv.weight': (1, 64, 3, 3),
        'decoder.13.conv.weight': (1, 128, 3, 3),         # dispconv 3
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
        assert k.replace('weight', 'bias') in sd
    assert len(sd) == 2 * len(expected)
    # resnet50 skips are 4x wider
    sd50 = DepthDecoder(NUM_CH_ENC[50]).state_dict()
    assert tuple(sd50['decoder.0.conv.conv.weight'].shape) == (256, 2048, 3, 3)
    assert tuple(sd50['decoder.5.conv.conv.weight'].shape) == (64, 64 + 256, 3, 3)
    assert tuple(sd50['decoder.7.conv.conv.weight'].shape) == (32, 32 + 64, 3, 3)


def test_depth_decoder_outputs(enc18):
    dec = DepthDecoder(enc18.num_ch_enc).eval()
    with torch.no_grad():
        out = dec(enc18(torch.rand(2, 3, 64, 128)))
    assert sorted(out) == [0, 1, 2, 3]
    for s, d in out.items():
        assert d.shape == (2, 1, 64 // 2 ** s, 128 // 2 ** s)
        assert torch.all((d > 0) & (d < 1))
    with pytest.raises(ValueError, match='scales'):
        DepthDecoder(enc18.num_ch_enc, scales=[4])


def test_disp_to_depth_bounds():
    scaled, depth = disp_to_depth(torch.tensor([0.0, 1.0, 0.5]), 0.1, 100.0)
    assert torch.allclose(depth[:2], torch.tensor([100.0, 0.1]))
    assert torch.allclose(scaled * depth, torch.ones(3))
    s_np, d_np = disp_to_depth(np.array([0.0, 1.0]), 0.5, 20.0)
    assert isinstance(d_np, np.ndarray) and np.allclose(d_np, [20.0, 0.5])
    with pytest.raises(ValueError, match='min_depth'):
        disp_to_depth(torch.zeros(1), 10.0, 1.0)


def test_pose_decoder_keys_shapes_and_output_scaling():
    enc = ResnetEncoder(18, num_input_images=2).eval()
    dec = PoseDecoder(enc.num_ch_enc).eval()
    sd = dec.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items() if k.endswith('weight')} == {
        'net.0.weight': (256, 512, 1, 1), 'net.1.weight': (256, 256, 3, 3),
        'net.2.weight': (256, 256, 3, 3), 'net.3.weight': (12, 256, 1, 1)}
    with torch.no_grad():
        feats = enc(torch.rand(3, 6, 64, 64))
        aa, t = dec([feats])
        assert aa.shape == t.shape == (3, 2, 1, 3)
        # the raw 6-vector of frame 0 is the mean of pose2's output, scaled by 0.01
        x = dec.relu(dec.net[0](feats[-1]))
        x = dec.net[3](dec.relu(dec.net[2](dec.relu(dec.net[1](x))))).mean((2, 3))
        assert torch.allclose(aa[:, 0, 0], 0.01 * x[:, :3], atol=1e-7)
        assert torch.allclose(t[:, 0, 0], 0.01 * x[:, 3:6], atol=1e-7)
    with pytest.raises(ValueError, match='feature sets'):
        dec([feats, feats])
