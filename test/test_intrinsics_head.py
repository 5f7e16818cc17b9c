"""Learned intrinsics (Depth from Videos in the Wild): a valid differentiable K, the pixel
convention, running average, and a toy optimisation on the synthetic world in which the
photometric loss (exact depth and pose, project's warp) pulls a wrong K toward the true one."""
import time

import numpy as np
import pytest
import torch

from depth_ego_ros.core.geometry import axis_angle_to_matrix_np, intrinsics_for_resize
from depth_ego_ros.core.losses import photometric_error, warp_image
from depth_ego_ros.core.networks.intrinsics_head import (IntrinsicsHead, RunningIntrinsics,
                                                         inverse_softplus,
                                                         normalized_from_intrinsics)
from depth_ego_ros.core.networks.posexp_net import PoseExpNet
from depth_ego_ros.core.networks.resnet_encoder import ResnetEncoder
from depth_ego_ros.data.synth import SynthConfig, SyntheticWorld

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures('torch_one_thread')]


def test_initial_K_is_the_prior_and_valid():
    head = IntrinsicsHead(256, init_focal=(0.8, 1.6), init_offset=(0.1, -0.05))
    feats = torch.randn(3, 256, 2, 3)
    K = head(feats, 128, 48)
    assert K.shape == (3, 3, 3)
    expected = torch.tensor([[0.8 * 128, 0, (0.5 + 0.1) * 128 - 0.5],
                             [0, 1.6 * 48, (0.5 - 0.05) * 48 - 0.5],
                             [0, 0, 1]])
    assert torch.allclose(K, expected.expand(3, 3, 3), atol=1e-4)   # weights start at 0
    # centred default: the principal point is the image centre in pixel-centre coordinates
    K0 = IntrinsicsHead(8)(torch.randn(1, 8, 1, 1), 64, 32)[0]
    assert torch.allclose(K0[:2, 2], torch.tensor([31.5, 15.5]))
    assert torch.allclose(K0[[0, 1], [0, 1]], torch.tensor([64.0, 32.0]), atol=1e-4)
    assert abs(float(torch.nn.functional.softplus(torch.tensor(inverse_softplus(0.3)))) - 0.3) < 1e-6


def test_K_stays_valid_for_any_features_and_reads_the_last_feature():
    torch.manual_seed(0)
    head = IntrinsicsHead(16)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 3.0)                               # wild weights
    feats = [torch.randn(4, 8, 4, 4), torch.randn(4, 16, 2, 2) * 10]
    K = head(feats, 100, 50)
    assert torch.isfinite(K).all()
    assert (K[:, 0, 0] > 0).all() and (K[:, 1, 1] > 0).all()        # softplus focal lengths
    assert (K[:, 0, 1] == 0).all() and (K[:, 1, 0] == 0).all()
    assert torch.equal(K[:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(4, 3))
    assert torch.linalg.det(K).gt(0).all()
    with pytest.raises(ValueError, match=r'\[B,16,h,w\]'):
        head(torch.randn(1, 8, 2, 2), 100, 50)
    with pytest.raises(ValueError):
        head(feats, 0, 50)


def test_gradient_flows_from_K_to_head_and_bottleneck():
    torch.manual_seed(1)
    pose = PoseExpNet(num_sources=1, output_exp=False)
    head = IntrinsicsHead(256)
    tgt, src = torch.rand(1, 3, 64, 128), torch.rand(1, 1, 3, 64, 128)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)

    def step():
        pose.zero_grad()
        opt.zero_grad()
        K = head(pose(tgt, src)['bottleneck'], 128, 64)
        (K[0, 0, 0] + K[0, 1, 1] + K[0, 0, 2] + K[0, 1, 2]).backward()
    step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    # the head's weights start at 0 (the prior holds for every input), so the bottleneck gets
    # its first gradient once they have moved: after one step the pose network learns K too
    opt.step()
    step()
    assert pose.conv7[0].weight.grad.abs().sum() > 0


def test_normalized_form_round_trip_and_running_average():
    K = np.array([[70.0, 0, 60.0], [0, 72.0, 20.0], [0, 0, 1]])
    f, o = normalized_from_intrinsics(K, 128, 48)
    assert np.allclose(f, [70 / 128, 72 / 48])
    run = RunningIntrinsics()
    assert run.K(128, 48) is None
    run.update(torch.from_numpy(np.stack([K, K * np.array([[1.1], [1.1], [1]])])), 128, 48)
    mean = (K + K * np.array([[1.1], [1.1], [1]])) / 2
    assert np.allclose(run.K(128, 48), mean)
    # resolution independent: the same camera at half size (plain scaling of the normalised form)
    assert np.allclose(run.K(64, 24)[[0, 1], [0, 1]], mean[[0, 1], [0, 1]] / 2)
    assert np.allclose(run.K(64, 24), intrinsics_for_resize(mean, (128, 48), (64, 24)))
    r2 = RunningIntrinsics()
    r2.load_state_dict(run.state_dict())
    assert np.allclose(r2.K(128, 48), run.K(128, 48)) and r2.count == 2
    with pytest.raises(ValueError):
        run.update(np.full((3, 3), np.nan), 128, 48)


def _pairs(world, W, H):
    """(target, source, target depth, T_src_tgt) with a designed motion per pair: yaw and pitch
    (observe fx, fy), lateral/vertical translation and forward motion (observe cx, cy)."""
    out = []
    motions = (([0.03, 0.05, 0.0], [0.3, 0.15, 0.8]), ([-0.03, -0.04, 0.01], [-0.3, -0.1, 0.6]))
    for i, (aa, t) in enumerate(motions):
        f = world.frame(5 + 10 * i)
        D = np.eye(4)
        D[:3, :3] = axis_angle_to_matrix_np(np.array(aa))
        D[:3, 3] = t
        rgb_s, _ = world.render(f.T_world_cam @ D)          # source camera = target moved by D
        img = lambda a: torch.from_numpy(a).float().permute(2, 0, 1)[None] / 255.0  # noqa: E731
        depth = torch.from_numpy(np.minimum(f.depth, 1e3)).float()[None, None]
        out.append((img(f.rgb), img(rgb_s), depth, torch.from_numpy(np.linalg.inv(D)).float()[None]))
    return out


def test_toy_optimisation_moves_K_toward_the_true_K():
    """Only the head is trained (on a frozen pose-encoder bottleneck), from focal lengths 25 %
    off and a principal point 5 and 3 pixels off; a few dozen Adam steps on the photometric
    loss of exact-depth, exact-pose warps bring every entry close to the synthetic camera's K."""
    t0 = time.perf_counter()
    W, H = 128, 48
    world = SyntheticWorld(SynthConfig(frames=30, width=W, height=H, seed=1))
    pairs = _pairs(world, W, H)
    K_true = torch.from_numpy(world.K).float()
    f_true, _ = normalized_from_intrinsics(world.K, W, H)
    torch.manual_seed(0)
    encoder = ResnetEncoder(18, num_input_images=2).eval()
    with torch.no_grad():
        bottleneck = encoder(torch.cat([pairs[0][0], pairs[0][1]], 1))[-1]
    head = IntrinsicsHead(512, init_focal=(f_true[0] * 0.75, f_true[1] * 1.25),
                          init_offset=(5 / W, -3 / H))
    opt = torch.optim.Adam(head.parameters(), lr=0.03)

    def loss_of(K):
        total = 0.0
        for tgt, src, depth, T in pairs:
            warped, valid = warp_image(src, depth, K, T)
            total = total + photometric_error(warped, tgt)[valid].mean()
        return total

    K0 = head(bottleneck, W, H).detach()[0]
    with torch.no_grad():
        loss0, loss_true = loss_of(K0[None]).item(), loss_of(K_true[None]).item()
    for _ in range(40):
        loss = loss_of(head(bottleneck, W, H))
        opt.zero_grad()
        loss.backward()
        opt.step()
    K = head(bottleneck, W, H).detach()[0]
    err0 = (K0 - K_true).abs()
    err = (K - K_true).abs()
    assert loss_true < loss0                                   # the true K explains the views best
    assert err[0, 0] < 0.25 * err0[0, 0] and err[1, 1] < 0.25 * err0[1, 1]
    assert err[0, 0] / K_true[0, 0] < 0.05 and err[1, 1] / K_true[1, 1] < 0.05
    assert err[0, 2] < 2.0 and err[1, 2] < 1.5                 # pixels
    assert err[0, 2] < err0[0, 2] and err[1, 2] < err0[1, 2]
    assert loss_of(K[None]).item() < loss0
    assert time.perf_counter() - t0 < 60                       # generous: keeps the suite honest
