"""The perception node's /diagnostics: one DiagnosticStatus per camera (rates, latencies, drops,
bad inputs, outputs published, the online refiner's statistics, batching with several cameras)
and a periodic log line about the online refiner.
"""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from depth_ego_ros.ros.perception_camera import CameraState
from depth_ego_ros.ros.perception_inputs import BAD_INPUTS
from depth_ego_ros.ros.perception_outputs import OUTPUTS

REFINER_STATS = ('rounds', 'accepted', 'rejected', 'nonfinite', 'resets', 'errors', 'share',
                 'cpu_share', 'round_ms_mean', 'build_ms_mean', 'swap_ms_max', 'weights_version')


class PerceptionDiagnostics:
    """Statuses of a PerceptionWorker's cameras; ``params()`` gives the node's parameters."""

    def __init__(self, work, params, node_name: str):
        self.work = work
        self._params = params
        self._node_name = node_name
        self._refine_log = (0.0, 0)

    def array(self, clock) -> DiagnosticArray:
        """Every camera's status, stamped now by ``clock`` (logs the refiner line first when
        it is due)."""
        if self.work.refiner is not None:
            self.log_refinement()
        msg = DiagnosticArray()
        msg.header.stamp = clock.now().to_msg()
        msg.status = [self.status(cam) for cam in self.work.cams]
        return msg

    def status(self, cam: CameraState) -> DiagnosticStatus:
        work, p, c = self.work, self._params(), cam.counts
        lat, slat, net = cam.latency.summary(), cam.stamp_latency.summary(), cam.net_ms.summary()
        values = {
            'input_rate_hz': cam.in_rate.rate(), 'output_rate_hz': cam.out_rate.rate(),
            'frames_received': cam.in_rate.count, 'frames_processed': c['frames_processed'],
            'frames_dropped': work.dropped(cam),
            'frames_skipped_no_subscribers': c['frames_skipped_no_subscribers'],
            'latency_ms_mean': lat['mean'], 'latency_ms_p50': lat['p50'], 'latency_ms_max': lat['max'],
            'latency_from_stamp_ms_mean': slat['mean'], 'network_ms_mean': net['mean'],
            'network_ms_p50': net['p50'], 'decode_ms_p50': cam.decode_ms.summary()['p50'],
            'outputs_ms_p50': cam.outputs_ms.summary()['p50'],
            'trajectory_resets': c['trajectory_resets'],
            'device': work.device, 'backend': work.backend, 'precision': work.precision,
            'backend_reason': work.backend_reason, 'model': p['model'],
            'pose_model': work.pose_model,
            'intrinsics': ('learned' if cam.camera_info is None or cam.camera_info[1] is None
                           else 'camera_info') if work.learned else 'given',
            'frames_learned_intrinsics': c['frames_learned_intrinsics'],
            'network_input': f'{p["width"]}x{p["height"]}', 'image_topic': cam.sub_image.topic_name,
        }
        values['online_refinement'] = 'on' if work.refiner is not None else 'off'
        if work.refiner is not None:
            st = work.refiner.stats()
            values.update({f'online_refinement.{k}': st[k] for k in REFINER_STATS})
        values.update({f'bad_input.{k}': c[k] for k in BAD_INPUTS})
        values.update({f'published.{k}': c[f'published_{k}'] for k in OUTPUTS})
        if work.multi:
            bs = work.pipeline.batch_size.summary()
            values.update({
                'camera': cam.name, 'cameras': len(work.cams),
                'odom_frame': work.outputs.odom_frame(cam),
                'batches': work.counts['batches'], 'batched_frames': work.counts['batched_frames'],
                'multi_frame_batches': work.counts['multi_frame_batches'],
                'batch_size_mean': bs['mean'], 'batch_size_max': bs['max'],
                'batch_ms_p50': work.pipeline.batch_ms.summary()['p50'],
            })
        name = f'{self._node_name}: perception' + (f' {cam.name}' if work.multi else '')
        status = DiagnosticStatus(name=name, hardware_id=work.device)
        recent_bad = {k: n for k, n in cam.bad_since_report.items() if n}
        cam.bad_since_report.clear()
        silent = cam.last_input is None or time.monotonic() - cam.last_input > 5.0
        if recent_bad:
            status.level = DiagnosticStatus.WARN
            status.message = 'bad input: ' + ', '.join(f'{k} x{n}' for k, n in sorted(recent_bad.items()))
        elif silent:
            status.level = DiagnosticStatus.WARN
            status.message = f'no images on {values["image_topic"]} for 5 s'
        else:
            status.level = DiagnosticStatus.OK
            status.message = f'{values["output_rate_hz"]:.1f} Hz out, {values["frames_dropped"]} dropped'
        status.values = [KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        return status

    def log_refinement(self):
        """One info line about the refiner when rounds happened, at most every 10 s."""
        refiner = self.work.refiner
        st = refiner.stats()
        last_t, last_rounds = self._refine_log
        now = time.monotonic()
        if st['rounds'] != last_rounds and now - last_t >= 10.0:
            self._refine_log = (now, st['rounds'])
            self.work.log.info(
                f"online refinement: {st['rounds']} rounds ({st['accepted']} accepted, "
                f"{st['rejected']} rejected, {st['nonfinite']} non-finite), share "
                f"{st['share'] * 100:.0f} %, {st['round_ms_mean']:.0f} ms busy per round, "
                f"weights swapped in {st['swap_ms_max'] * 1e3:.0f} us (max)"
                + (f"; last error: {refiner.last_error}" if refiner.last_error else ''))


__all__ = ['PerceptionDiagnostics', 'REFINER_STATS']
