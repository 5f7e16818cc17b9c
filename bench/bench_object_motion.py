"""Cost of the object-motion pieces (prints figures; never asserted in tests).

python bench/bench_object_motion.py [--resolution 640x192] [--runs 9] [--threads 1]
"""
import argparse
import statistics
import time

import torch

from depth_ego_ros.core.losses import (LossConfig, SelfSupervisedLoss, warp_image,
                                       warp_image_with_objects)
from depth_ego_ros.core.object_motion import ObjectMotionNet, mask_centroids, object_motion_matrices


def timed(fn, runs):
    fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--resolution', default='640x192')
    ap.add_argument('--runs', type=int, default=9)
    ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    W, H = (int(v) for v in a.resolution.split('x'))
    torch.manual_seed(0)
    net = ObjectMotionNet().eval()
    tgt, src = torch.rand(1, 3, H, W), torch.rand(1, 3, H, W)
    depth = torch.rand(1, 1, H, W) * 20 + 1
    K = torch.tensor([[[0.58 * W, 0, W / 2], [0, 1.92 * H, H / 2], [0, 0, 1]]])
    T = torch.eye(4)[None]
    print(f'{W}x{H}, {a.threads} thread(s), median of {a.runs}, ObjectMotionNet '
          f'{sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters')
    for M in (1, 2, 4, 8):
        masks = torch.zeros(1, M, H, W)
        for m in range(M):
            masks[0, m, H // 3:2 * H // 3, m * W // M:(m + 1) * W // M] = 1
        with torch.no_grad():
            fwd = timed(lambda: net(tgt, src, masks), a.runs)

        def fb():
            net.zero_grad()
            aa, tr = net(tgt, src, masks)
            aa.sum().add(tr.sum()).backward()
        fwdbwd = timed(fb, a.runs)
        Tobj = object_motion_matrices(torch.zeros(1, M, 3), torch.zeros(1, M, 3),
                                      mask_centroids(depth, K, masks))
        with torch.no_grad():
            w_obj = timed(lambda: warp_image_with_objects(src, depth, K, T, masks, Tobj), a.runs)
            w_ego = timed(lambda: warp_image(src, depth, K, T), a.runs)
        print(f'M={M}: net forward {fwd:.1f} ms ({fwd / M:.1f} ms/object), forward+backward '
              f'{fwdbwd:.1f} ms; warp with objects {w_obj:.1f} ms vs rigid warp {w_ego:.1f} ms')
    # the whole loss, 2 sources, 4 scales, with and without 4 objects
    loss = SelfSupervisedLoss(LossConfig())
    disps = [torch.rand(1, 1, H // 2 ** s, W // 2 ** s, requires_grad=True) for s in range(4)]
    masks = torch.zeros(1, 4, H, W)
    for m in range(4):
        masks[0, m, H // 3:2 * H // 3, m * W // 4:(m + 1) * W // 4] = 1
    Tobj = object_motion_matrices(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3))
    base = timed(lambda: loss(tgt, [src, src], disps, [T, T], K).total.backward(), a.runs)
    obj = timed(lambda: loss(tgt, [src, src], disps, [T, T], K, object_masks=masks,
                             object_poses=[Tobj, Tobj]).total.backward(), a.runs)
    print(f'SelfSupervisedLoss forward+backward (2 sources, 4 scales): rigid {base:.0f} ms, '
          f'with 4 objects {obj:.0f} ms')


if __name__ == '__main__':
    main()
