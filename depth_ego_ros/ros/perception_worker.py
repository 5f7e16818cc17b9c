"""The perception node's work as an object, without the node: the estimator (and the online
refiner), one state per camera, the latest-frame slots between the DDS callbacks and a worker
thread, and per frame: decode -> intrinsics -> networks -> outputs.

Runtime model: callbacks (:meth:`on_image`, :meth:`on_camera_info`, :meth:`on_speed`) only store
what arrived; a newer frame replaces an unprocessed one and counts as dropped. One worker thread
decodes, runs the estimator, builds the outputs that have subscribers and publishes them. With
several cameras it takes every waiting frame (after ``batch_window`` s for the other recently
active cameras) and runs them through the networks as one ``Estimator.infer_batch`` call; a bad
frame drops only itself.

Lifecycle (what a lifecycle node maps its transitions to): construct (loads the networks: the
heavy part, "configure"), attach ``outputs`` (a PerceptionOutputs on the node's publishers),
:meth:`start` (worker thread and refiner, "activate"), :meth:`stop` ("deactivate"; start again
later), :meth:`close` (stop, save the refined weights if asked, release; "cleanup"/"shutdown").
"""
from __future__ import annotations

import collections
import math
import threading
import time

from nav_msgs.msg import Odometry

from depth_ego_ros.ros.perception_camera import CameraState
from depth_ego_ros.ros.perception_inputs import BadInputs, FrameInputs
from depth_ego_ros.ros.perception_params import (base_to_camera, check_params, estimator_config,
                                                 fallback_k, refiner_changes, refiner_config)
from depth_ego_ros.ros.perception_pipeline import FramePipeline
from depth_ego_ros.ros.runtime import KeyedSlots, LatestSlot


class PerceptionWorker:
    """``params()`` gives the node's current parameters (read at every use, so runtime changes
    apply); ``logger`` and ``clock`` are the node's."""

    def __init__(self, params, logger, clock):
        self._params = params
        self.log = logger
        self._clock = clock
        p = params()
        names = check_params(p)
        self.multi = bool(names)
        # -- estimator (heavy imports here so that `--help`-like paths stay light) --------------
        from depth_ego_ros.core.estimator import Estimator
        from depth_ego_ros.ros.odometry import PoseChain
        from depth_ego_ros.zoo import resolve_checkpoint
        checkpoint = resolve_checkpoint(p['checkpoint'], auto_fetch=p['auto_fetch'],  # path or zoo name
                                        progress=False, log=self.log.info)
        self.estimator = Estimator(estimator_config(p), checkpoint)
        self.device = str(getattr(self.estimator, 'device', p['device']))
        # an exported model's manifest may override pose_model / learned_intrinsics
        self.pose_model = self.estimator.config.pose_model
        self.learned = bool(self.estimator.config.learned_intrinsics)
        self.bad = BadInputs(logger, p['log_throttle'], self.multi)
        self.inputs = FrameInputs(params, self.bad, self.learned)
        if self.learned and fallback_k(p) is not None:  # (inputs.fallback_k() is None when learned)
            self.log.warning('learned_intrinsics is set: camera_info.fallback_k is ignored '
                             '(the learned K is used until a camera_info arrives)')
        info = getattr(self.estimator, 'backend_info', {})
        self.backend = info.get('backend', p['backend'])
        self.precision = self.estimator.config.precision
        self.backend_reason = info.get('reason', '')
        self.refiner = None
        if p['online_refinement.enabled']:
            from depth_ego_ros.core.online_refinement import OnlineRefiner
            rc = refiner_config(p)
            self.refiner = OnlineRefiner(self.estimator, rc)   # ValueError: unsupported nets
            self.log.info(
                f'online refinement on: window {rc.window}, {rc.steps} steps x {rc.batch} '
                f'triplets every {rc.interval:g} s, lr {rc.learning_rate:g}, networks '
                f'{rc.networks}, max share {rc.max_share:g}, {rc.threads} thread(s)')
        self.T_base_cam = base_to_camera(p)

        def chain():
            return PoseChain(self.T_base_cam, p['odom.translation_noise'], p['odom.rotation_noise'])
        self.cams = ([CameraState(n, chain()) for n in names] if self.multi
                     else [CameraState(None, chain())])
        self.counts = self.cams[0].counts if not self.multi else collections.Counter()
        self.pipeline = FramePipeline(self.estimator, self.refiner, self.inputs, self.bad, clock,
                                      self.multi, self.counts)
        self.speed_topic = ''
        self._slots = KeyedSlots(names) if self.multi else LatestSlot()
        self._thread = None

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------
    def start(self):
        """Start the online refiner and the worker thread (again after :meth:`stop`)."""
        if self._slots.closed:
            self._slots = KeyedSlots(self._slots.keys) if self.multi else LatestSlot()
        if self.refiner is not None:
            self.refiner.start()
        self._thread = threading.Thread(target=self._work, name='depth_ego_worker', daemon=True)
        self._thread.start()

    def stop(self):
        """Stop taking frames (the one being processed finishes) and pause the refiner."""
        self._slots.close()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self.refiner is not None:
            self.refiner.stop()

    def close(self):
        """Stop; write the refined weights when online_refinement.save_dir is set; release."""
        self.stop()
        if self.refiner is not None:
            out = self._params()['online_refinement.save_dir']
            if out:
                try:
                    st = self.refiner.stats()
                    d = self.refiner.save(out)
                    self.log.info(f"online refinement: weights saved to {d} "
                                  f"({st['accepted']} of {st['rounds']} rounds accepted)")
                except Exception as exc:  # never lose the shutdown over it
                    self.log.error(f'online refinement: saving to {out} failed: '
                                   f'{type(exc).__name__}: {exc}')
            self.refiner.close()

    def apply_params(self, changes: dict):
        """Runtime parameter changes (already in ``params()``) that live in objects."""
        if 'log_throttle' in changes:
            self.bad.period = changes['log_throttle']
        if self.refiner is not None:
            rc = refiner_changes(changes)
            if rc:
                self.refiner.update_config(**rc)
        for cam in self.cams:
            if 'odom.translation_noise' in changes:
                cam.chain.translation_noise = changes['odom.translation_noise']
            if 'odom.rotation_noise' in changes:
                cam.chain.rotation_noise = changes['odom.rotation_noise']

    @property
    def outputs(self):
        """The PerceptionOutputs frames are published with (attach before :meth:`start`)."""
        return self.pipeline.outputs

    @outputs.setter
    def outputs(self, outputs):
        self.pipeline.outputs = outputs

    def dropped(self, cam: CameraState) -> int:
        return self._slots.dropped[cam.name] if self.multi else self._slots.dropped

    # ------------------------------------------------------------------------------------------
    # callbacks: cheap, never block
    # ------------------------------------------------------------------------------------------
    def on_image(self, cam: CameraState, msg):
        now = time.monotonic()
        cam.in_rate.tick()
        cam.last_input = now
        if self.multi:
            self._slots.put(cam.name, (msg, now))
        else:
            self._slots.put((msg, now))

    def on_camera_info(self, cam: CameraState, msg):
        self.inputs.on_camera_info(cam, msg)

    def on_speed(self, msg):
        v = msg.twist.twist.linear if isinstance(msg, Odometry) else msg.twist.linear
        speed = math.sqrt(v.x * v.x + v.y * v.y + v.z * v.z)
        if math.isfinite(speed):
            self.pipeline.speed = speed
        else:
            for cam in self.cams:                       # the speed scales every camera
                self.bad(cam, 'bad_speed', f'non-finite speed on {self.speed_topic} ignored')

    # ------------------------------------------------------------------------------------------
    # worker thread
    # ------------------------------------------------------------------------------------------
    def _error(self, cam: CameraState, exc: Exception):
        """The worker never dies: count, log, go on."""
        self.bad(cam, 'processing_error', f'{type(exc).__name__}: {exc}', level='error')

    def _work(self):
        slots = self._slots
        if self.multi:
            return self._work_batched(slots)
        cam = self.cams[0]
        while not slots.closed:
            item = slots.take(timeout=0.5)
            if item is None:
                continue
            try:
                self.pipeline.process(cam, *item)
            except Exception as exc:
                self._error(cam, exc)

    def _work_batched(self, slots: KeyedSlots):
        """Multi-camera: take every camera's waiting frame (after batch_window for the others),
        prepare each on its own (a bad frame only drops itself), one infer_batch for all."""
        while not slots.closed:
            items = slots.take_batch(timeout=0.5, window=self._params()['batch_window'])
            if not items:
                continue
            ready = []
            for name, (msg, t_recv) in items.items():
                cam = self.cams[slots.keys.index(name)]
                try:
                    prep = self.pipeline.prepare(cam, msg, t_recv)
                    if prep is not None:
                        ready.append(prep)
                except Exception as exc:
                    self._error(cam, exc)
            if not ready:
                continue
            try:
                results = self.pipeline.infer_batch(ready)
            except Exception as exc:
                for prep in ready:
                    self._error(prep.cam, exc)
                continue
            for prep, out in zip(ready, results):
                if out is None:
                    continue
                try:
                    self.pipeline.finish(prep, out.depth, out.relative_pose, with_pose=True,
                                         K=out.K, mask=out.explainability)
                except Exception as exc:
                    self._error(prep.cam, exc)


__all__ = ['PerceptionWorker']
