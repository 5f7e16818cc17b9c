"""One frame's way through the perception node: decode and intrinsics (perception_inputs), the
trajectory checks, which outputs are wanted, the estimator call (one frame, or one batch for
several cameras), then the outputs (perception_outputs), the pose chain and the online
refiner's window. Called by the worker thread (perception_worker); no threads and no node here.
"""
from __future__ import annotations

import time

import numpy as np

from depth_ego_ros.ros import conversions as conv
from depth_ego_ros.ros.perception_camera import CameraState, Prepared
from depth_ego_ros.ros.perception_inputs import BadInputs, FrameInputs
from depth_ego_ros.ros.runtime import Stats


class FramePipeline:
    """``estimator``: the core Estimator; ``refiner``: its OnlineRefiner or None; ``clock``: the
    node's (stamp latency); ``counts``: where batch counters go. ``outputs`` (a
    PerceptionOutputs) is attached before the first frame; ``speed`` is the newest platform
    speed (scale.mode speed)."""

    def __init__(self, estimator, refiner, inputs: FrameInputs, bad: BadInputs, clock,
                 multi: bool, counts):
        from depth_ego_ros.core.estimator import Frame
        self._Frame = Frame
        self.estimator = estimator
        self.refiner = refiner
        self.inputs = inputs
        self.bad = bad
        self._clock = clock
        self.multi = multi
        self.counts = counts
        self.outputs = None
        self.speed = None
        self.batch_size, self.batch_ms = Stats(), Stats()

    def infer_batch(self, ready: list) -> list:
        """One network call for all prepared frames; when the estimator refuses the batch (one
        frame's intrinsics), each frame alone, so that only the bad one is dropped."""
        frames = [self._Frame(r.image, r.K, r.stamp_ns * 1e-9, self.speed, r.cam.cid, r.encoding)
                  for r in ready]
        t0 = time.perf_counter()
        try:
            outs = self.estimator.infer_batch(frames)
        except ValueError:
            outs = []
            for r, f in zip(ready, frames):
                try:
                    outs.append(self.estimator.infer_batch([f])[0])
                except ValueError as exc:
                    self.bad(r.cam, 'bad_intrinsics', f'frame dropped: {exc}')
                    outs.append(None)
        ms = (time.perf_counter() - t0) * 1e3
        n = sum(o is not None for o in outs)
        if n:
            self.batch_size.add(n)
            self.batch_ms.add(ms)
            self.counts['batches'] += 1
            self.counts['batched_frames'] += n
            if n > 1:
                self.counts['multi_frame_batches'] += 1
            for r, o in zip(ready, outs):
                if o is not None:
                    r.cam.net_ms.add(ms)
        return outs

    def reset_estimator(self, cam: CameraState):
        if self.multi:
            self.estimator.reset(cam.cid)
        else:
            self.estimator.reset()

    def reset_trajectory(self, cam: CameraState, kind: str, why: str):
        self.bad(cam, kind, f'{why}: odometry restarts from the origin')
        self.reset_estimator(cam)
        if self.refiner is not None:                    # no triplet across the jump
            self.refiner.reset_window(cam.cid)
        cam.chain.reset()
        cam.counts['trajectory_resets'] += 1

    def prepare(self, cam: CameraState, msg, t_recv: float):
        """Decode, intrinsics, trajectory checks, wanted outputs -> Prepared or None (skipped)."""
        t0 = time.perf_counter()
        image, encoding = self.inputs.decode(cam, msg)
        if image is None:
            return None
        cam.decode_ms.add((time.perf_counter() - t0) * 1e3)
        height, width = image.shape[:2]
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        K, info_msg = self.inputs.intrinsics(cam, width, height, stamp_ns)
        if K is None:
            return None
        learned = isinstance(K, str)                    # LEARNED: the estimator's K (K=None)
        if learned:
            K = None
            cam.counts['frames_learned_intrinsics'] += 1
        broken = self.inputs.trajectory_break(cam, width, height, stamp_ns)
        if broken is not None:
            self.reset_trajectory(cam, *broken)
        dt = None if cam.last_stamp_ns is None else (stamp_ns - cam.last_stamp_ns) * 1e-9

        want = self.outputs.wanted(cam)
        if not any(want.values()):
            cam.counts['frames_skipped_no_subscribers'] += 1
            if cam.pose_active:
                self.reset_estimator(cam)      # the motion while idle is not observed
                cam.pose_active = False
            return None
        return Prepared(cam=cam, msg=msg, t_recv=t_recv, image=image, encoding=encoding, K=K,
                        info_msg=info_msg, stamp_ns=stamp_ns, dt=dt, want=want,
                        # the learned K and the explainability mask come from the pose net
                        want_pose=want['odom'] or want['tf'] or want['explainability'] or learned)

    def process(self, cam: CameraState, msg, t_recv: float):
        """Single-camera mode: one frame through the estimator (depth only when nobody listens
        to the odometry)."""
        r = self.prepare(cam, msg, t_recv)
        if r is None:
            return
        try:
            if r.want_pose:
                out = self.estimator.infer(r.image, r.K, stamp=r.stamp_ns * 1e-9, speed=self.speed,
                                           encoding=r.encoding)
                depth, rel, K_used, mask = out.depth, out.relative_pose, out.K, out.explainability
                cam.net_ms.add(out.timings.get('total', float('nan')))
            else:
                if cam.pose_active:
                    self.estimator.reset()
                t0 = time.perf_counter()
                depth, rel = self.estimator.depth_only(r.image, r.K, encoding=r.encoding), None
                K_used, mask = r.K, None
                cam.net_ms.add((time.perf_counter() - t0) * 1e3)
        except ValueError as exc:                # e.g. intrinsics the estimator refuses
            self.bad(cam, 'bad_intrinsics', f'frame dropped: {exc}')
            return
        self.finish(r, depth, rel, with_pose=r.want_pose, K=K_used, mask=mask)

    def finish(self, r: Prepared, depth, rel, with_pose: bool, K=None, mask=None):
        """Publish one frame's outputs with its own camera's header and advance its trajectory.
        ``with_pose``: the estimator ran the pose network for this frame (its chain continues).
        ``K``: the intrinsics the estimator used (default: the frame's); ``mask``: its
        explainability mask (PoseExpNet) or None."""
        cam, out = r.cam, self.outputs
        cam.pose_active = with_pose
        cam.last_size, cam.last_stamp_ns = (r.image.shape[1], r.image.shape[0]), r.stamp_ns

        t_out = time.perf_counter()
        header = out.header(cam, r.msg)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
        K = np.asarray(K if K is not None else r.K, dtype=np.float64)
        out.publish_images(cam, r.want, header, depth, K, r.info_msg)
        if r.want['explainability'] and mask is not None:
            out.publish_explainability(cam, header, mask)
        if with_pose:
            cam.chain.update(rel, r.dt)
            if r.want_pose:
                out.publish_odometry(cam, r.want, header)
        if self.refiner is not None and K is not None:   # one image copy; work in its thread
            self.refiner.add_frame(r.image, K, r.stamp_ns * 1e-9, self.speed, camera_id=cam.cid,
                                   encoding=r.encoding)
        cam.outputs_ms.add((time.perf_counter() - t_out) * 1e3)
        cam.counts['frames_processed'] += 1
        cam.out_rate.tick()
        cam.latency.add((time.monotonic() - r.t_recv) * 1e3)
        now_ns = self._clock.now().nanoseconds
        cam.stamp_latency.add((now_ns - r.stamp_ns) * 1e-6)



__all__ = ['FramePipeline']
