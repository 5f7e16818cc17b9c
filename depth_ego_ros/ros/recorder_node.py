"""recorder_node: records the camera (+ camera_info, odometry, TF, extra topics) into rosbag2 bags
made for self-supervised fine-tuning — as serialized CDR, exactly as received.

Topics (names are parameters; relative names follow the node's namespace and remappings):
  camera_topic       sensor_msgs/Image or CompressedImage (type from the graph or camera_type)
  camera_info_topic  sensor_msgs/CameraInfo, written once per change (camera_info_on_change)
  odom_topic         nav_msgs/Odometry or geometry_msgs/Twist(-Stamped, -WithCovarianceStamped)
  /tf, /tf_static    tf2_msgs/TFMessage (record_tf); /tf_static transient local
  extra_topics       'name' or 'name:pkg/msg/Type' entries
Services (std_srvs): ~/start, ~/stop, ~/split (Trigger), ~/pause (SetBool), ~/status (Trigger,
JSON counters). Diagnostics on /diagnostics.

Runtime: the subscription callback decides what to keep (``recorder_filter``) and queues the bytes
for the writer thread (``recorder_writer``); SIGINT/SIGTERM write what is queued and finalise the
bag (complete metadata.yaml). See docs/recorder.md.
"""
from __future__ import annotations

import json
import sys
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool, Trigger

from ..data.bag_writer import BagWriterConfig
from ..data.bag_types import TypeCatalog
from .node_main import run_node
from .params import Param, declare, on_set_validator
from .recorder_filter import (CameraInfoDedup, FilterConfig, FrameError, FrameFilter,
                              compressed_thumbnail, header_stamp_ns, image_thumbnail,
                              twist_speeds)
from .recorder_topics import CAMERA_INFO, COMPRESSED, IMAGE, RecorderTopics
from .recorder_writer import RecordingWorker, WorkerConfig

NODE_NAME = 'recorder'
MiB = 2 ** 20

PARAMS = (
    # -- what to record
    Param('camera_topic', 'image', 'camera image topic (Image or CompressedImage)',
          read_only=True),
    Param('camera_type', '', 'camera message type; empty = learn it from the graph',
          choices=('', IMAGE, COMPRESSED), read_only=True),
    Param('camera_info_topic', 'camera_info', 'CameraInfo topic; empty = none', read_only=True),
    Param('camera_info_on_change', True,
          'write camera_info only when it changes (any field but the stamp); false = every one'),
    Param('odom_topic', '', 'odometry / twist topic for velocity supervision; empty = none',
          read_only=True),
    Param('record_tf', True, 'record /tf and /tf_static', read_only=True),
    # -- what to keep
    Param('drop_static', False, 'drop camera frames while the camera does not move (keeping the '
          'frames that bound a static period, see docs/recorder.md)'),
    Param('static_source', 'auto', 'motion test: auto (odometry when fresh, else image), image, '
          'odometry', choices=('auto', 'image', 'odometry')),
    Param('image_threshold', 2.0, 'static when the mean grey-level difference to the last kept '
          'frame (40x30 thumbnail) is below this', range=(0.0, 255.0)),
    Param('speed_threshold', 0.05, 'static when odometry linear speed (m/s) is below this',
          range=(0.0, 100.0)),
    Param('angular_threshold', 0.02, 'and angular speed (rad/s) below this', range=(0.0, 100.0)),
    Param('static_gap', 1.0, 'seconds without a kept frame that make a static period '
          '(segment boundary for training triplets)', range=(0.0, 3600.0)),
    Param('max_rate', 0.0, 'keep at most this many camera frames per second; 0 = all',
          range=(0.0, 1000.0)),
    # -- bags
    Param('output_dir', 'bags', 'directory receiving the bags (created when missing, ~ expanded;'
          ' a change applies to the next bag)'),
    Param('bag_name', 'depth_ego_%Y%m%d_%H%M%S', 'bag directory name; strftime codes are '
          'filled with the local start time, _N is appended when it exists (next bag)'),
    Param('storage', 'mcap', 'rosbag2 storage', choices=('mcap', 'sqlite3'), read_only=True),
    Param('compression', 'none', 'zstd: MCAP chunk compression / sqlite3 per-message',
          choices=('none', 'zstd'), read_only=True),
    Param('chunk_size', 768 * 1024, 'MCAP chunk size in bytes (a SIGKILL loses at most the open '
          'chunk)', range=(1024, MiB), read_only=True),
    Param('flush_period', 1.0, 'seconds after which the open chunk is written anyway (sqlite3: '
          'commit period)', range=(0.01, 3600.0), read_only=True),
    Param('max_bag_size', 0, 'split when a file reaches this many bytes; 0 = never',
          range=(0, 2 ** 62), read_only=True),
    Param('max_bag_duration', 0.0, 'split when a file spans this many seconds; 0 = never',
          range=(0.0, 1e7), read_only=True),
    Param('min_free_space', 512 * MiB, 'stop recording (cleanly, with an error) when the disk '
          'has fewer free bytes; 0 = no check', range=(0, 2 ** 62), read_only=True),
    Param('queue_size', 300, 'messages waiting for the disk at most (more are dropped, counted)',
          range=(1, 1_000_000), read_only=True),
    Param('queue_max_bytes', 512 * MiB, 'bytes waiting for the disk at most',
          range=(MiB, 2 ** 40), read_only=True),
    Param('start_paused', False, 'start without recording; ~/start or ~/pause false begins',
          read_only=True),
    Param('reliability', 'auto', 'subscription reliability: auto (reliable when every publisher '
          'is), reliable, best_effort', choices=('auto', 'reliable', 'best_effort'),
          read_only=True),
    Param('discovery_period', 0.25, 'seconds between looks at the graph for topics not yet '
          'subscribed', range=(0.01, 60.0), read_only=True),
    Param('diagnostics_period', 1.0, 'seconds between /diagnostics messages; 0 = none',
          range=(0.0, 3600.0), read_only=True),
)


class RecorderNode(Node):

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.p = declare(self, PARAMS)
        extra = self.declare_parameter(
            'extra_topics', Parameter.Type.STRING_ARRAY, ParameterDescriptor(
                description="more topics to record: 'name' or 'name:pkg/msg/Type'",
                read_only=True)).value or []
        p = self.p
        self.filter = FrameFilter(FilterConfig(
            drop_static=p['drop_static'], static_source=p['static_source'],
            image_threshold=p['image_threshold'], speed_threshold=p['speed_threshold'],
            angular_threshold=p['angular_threshold'], static_gap=p['static_gap'],
            max_rate=p['max_rate']))
        writer_cfg = BagWriterConfig(
            storage=p['storage'], compression=p['compression'], chunk_size=p['chunk_size'],
            flush_period=p['flush_period'], max_bag_size=p['max_bag_size'],
            max_bag_duration=p['max_bag_duration']).validate()
        self.add_on_set_parameters_callback(on_set_validator(PARAMS, self._apply_params))
        self.catalog = TypeCatalog()
        self.camera_info_dedup = CameraInfoDedup()
        self._sim_time = self.get_parameter('use_sim_time').value
        self.topics = RecorderTopics(self, self.catalog,
                                     lambda spec, latch: self.worker.add_topic(spec, latch=latch),
                                     self._on_message, p['reliability'])
        self.slots = self.topics.make_slots(p, extra)
        self._paused = bool(p['start_paused'])

        self.worker = RecordingWorker(
            WorkerConfig(output_dir=p['output_dir'], bag_name=p['bag_name'], writer=writer_cfg,
                         queue_size=p['queue_size'], queue_max_bytes=p['queue_max_bytes'],
                         min_free_space=p['min_free_space']),
            log=self._log, now_ns=self._now_ns, custom_data=self.counters)

        self.create_service(Trigger, '~/start', self._srv_start)
        self.create_service(Trigger, '~/stop', self._srv_stop)
        self.create_service(Trigger, '~/split', self._srv_split)
        self.create_service(SetBool, '~/pause', self._srv_pause)
        self.create_service(Trigger, '~/status', self._srv_status)
        if p['diagnostics_period'] > 0:
            self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self.create_timer(p['diagnostics_period'], self._publish_diagnostics)

        self.topics.resolve()
        self.create_timer(p['discovery_period'], self.topics.resolve)
        if not self._paused:
            ok, text = self.worker.start()
            self._log('info' if ok else 'error', text)
        else:
            self.get_logger().info('started paused: call ~/start (or ~/pause false) to record')

    def _apply_params(self, changes):
        """Run-time changes of the keep rules (the others are read-only)."""
        self.p.update(changes)
        cfg = self.filter.config
        for name, value in changes.items():
            if hasattr(cfg, name):
                setattr(cfg, name, value)
        cfg.validate()
        for name in ('output_dir', 'bag_name'):      # for the next bag
            if name in changes:
                setattr(self.worker.config, name, changes[name])
        self.get_logger().info(f'parameters changed: {changes}')

    # -- messages -----------------------------------------------------------------------------

    def _now_ns(self):
        return self.get_clock().now().nanoseconds if self._sim_time else time.time_ns()

    def _stamp(self, info):
        if not self._sim_time and info:
            stamp = info.get('received_timestamp') if isinstance(info, dict) else \
                getattr(info, 'received_timestamp', None)
            if stamp:
                return int(stamp)
        return self._now_ns()

    def _recording(self):
        return self.worker.state == 'recording' and not self._paused

    def _on_message(self, slot, raw, info):
        stamp = self._stamp(info)
        slot.received += 1
        role = slot.role
        if role == 'camera_info':
            if self.p['camera_info_on_change'] and not self._camera_info_changed(slot, raw):
                slot.dropped['unchanged'] += 1
                return
            return self._forward(slot, stamp, raw, latched=True)
        if role == 'tf_static':
            return self._forward(slot, stamp, raw, latched=True)
        if role == 'odom':
            try:
                # same clock as the camera frames' capture time (header stamps)
                capture = stamp if slot.msgtype.endswith('/Twist') else \
                    header_stamp_ns(raw) or stamp
                self.filter.update_odometry(capture, *twist_speeds(
                    self.catalog.deserialize(raw, slot.msgtype)))
            except Exception as exc:  # noqa: BLE001 - recorded anyway
                self._bad_input(slot, exc)
        if role == 'camera':
            if not self._recording():
                slot.dropped['paused' if self.worker.state == 'recording'
                             else 'not_recording'] += 1
                return
            # the filter reasons in capture time (header stamp) — scheduling delays between the
            # camera and this callback must not look like motion pauses; bags keep receive time
            capture = header_stamp_ns(raw) or stamp
            kept = self.filter.offer(capture, (stamp, raw), lambda: self._thumbnail(slot, raw))
            for _capture, (bag_stamp, data) in kept:
                self._forward(slot, bag_stamp, data)
            return
        self._forward(slot, stamp, raw)

    def _forward(self, slot, stamp, data, latched=False):
        if not self._recording():
            if latched:   # kept for the next bag / resume, not dropped
                self.worker.cache(slot.name, stamp, data)
            else:
                slot.dropped['paused' if self.worker.state == 'recording'
                             else 'not_recording'] += 1
            return
        reason = self.worker.put(slot.name, stamp, data)
        if reason:
            slot.dropped[reason] += 1

    def _camera_info_changed(self, slot, raw):
        try:
            return self.camera_info_dedup.changed(self.catalog.deserialize(raw, CAMERA_INFO))
        except Exception as exc:  # noqa: BLE001 - keep it when it cannot be compared
            self._bad_input(slot, exc)
            return True

    def _thumbnail(self, slot, raw):
        try:
            msg = self.catalog.deserialize(raw, slot.msgtype)
        except Exception as exc:  # noqa: BLE001
            self._bad_input(slot, exc)
            raise FrameError(str(exc)) from exc
        try:
            return image_thumbnail(msg) if slot.msgtype == IMAGE else compressed_thumbnail(msg)
        except FrameError as exc:
            self._bad_input(slot, exc)
            raise

    def _bad_input(self, slot, exc):
        slot.bad_input += 1
        self.get_logger().warning(f'{slot.name}: cannot analyse a message ({exc}); it is recorded '
                               'as received', throttle_duration_sec=5.0)

    # -- services -------------------------------------------------------------------------------

    def _log(self, level, text):
        # after SIGINT/SIGTERM the context is shut down: a node logger would try /rosout
        logger = self.get_logger() if self.context.ok() else \
            rclpy.logging.get_logger(f'{self.get_name()}_shutdown')
        # one call site per severity: rclpy refuses a severity change at the same line
        if level == 'error':
            logger.error(text)
        elif level == 'warn':
            logger.warning(text)
        elif level == 'debug':
            logger.debug(text)
        else:
            logger.info(text)

    def _srv_start(self, _req, res):
        if self.worker.state == 'recording':
            if self._paused:
                self._paused = False
                res.success, res.message = self.worker.resume()
            else:
                res.success, res.message = False, f'already recording to {self.worker.bag.path}'
            return res
        self._paused = False
        res.success, res.message = self.worker.start()
        self._log('info' if res.success else 'error', res.message)
        return res

    def _srv_stop(self, _req, res):
        res.success, res.message = self.worker.stop()
        return res

    def _srv_split(self, _req, res):
        res.success, res.message = self.worker.split()
        return res

    def _srv_pause(self, req, res):
        if req.data:
            self._paused = True
            res.success = self.worker.state == 'recording'
            res.message = 'paused' if res.success else 'not recording'
            return res
        return self._srv_start(None, res)

    def _srv_status(self, _req, res):
        res.success = self.worker.state != 'error'
        res.message = json.dumps(self.status(), sort_keys=True)
        return res

    # -- reporting ------------------------------------------------------------------------------

    def counters(self) -> dict:
        """received / written / dropped by reason, per topic; the camera filter's decisions."""
        topics = {}
        for s in self.slots:
            topics[s.name] = {'role': s.role, 'type': s.msgtype, 'state': s.state,
                              'received': s.received, 'written': self.worker.written[s.name],
                              'dropped': dict(s.dropped), 'bad_input': s.bad_input}
            if s.error:
                topics[s.name]['error'] = s.error
        return {
            'topics': topics,
            'camera_filter': dict(self.filter.counts),
            'queue': {'peak_messages': self.worker.peak_queue_msgs,
                      'peak_bytes': self.worker.peak_queue_bytes,
                      'max_messages': self.p['queue_size'],
                      'max_bytes': self.p['queue_max_bytes']},
        }

    def status(self) -> dict:
        bag = self.worker.bag
        return {
            'state': 'paused' if self._paused and self.worker.state == 'recording'
            else self.worker.state,
            'error': self.worker.error,
            'bag': str(bag.path) if bag else '',
            'file': str(bag.current_file) if bag and bag.current_file else '',
            'bags': [str(b) for b in self.worker.bags],
            **self.counters(),
        }

    def _publish_diagnostics(self):
        st = self.status()
        status = DiagnosticStatus(name=f'{self.get_name()}: recorder', hardware_id='')
        status.level = (DiagnosticStatus.ERROR if st['state'] == 'error' else
                        DiagnosticStatus.WARN if any(t['dropped'].get('queue_full')
                                                     for t in st['topics'].values())
                        else DiagnosticStatus.OK)
        status.message = st['error'] or st['state']
        values = [('state', st['state']), ('bag', st['bag'])]
        for name, t in st['topics'].items():
            values.append((f'{name} received', t['received']))
            values.append((f'{name} written', t['written']))
            for reason, n in t['dropped'].items():
                values.append((f'{name} dropped {reason}', n))
        values.append(('queue peak messages', st['queue']['peak_messages']))
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values]
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [status]
        self.pub_diag.publish(msg)

    def close(self):
        """Write what is queued and finalise the bag (also on SIGINT/SIGTERM)."""
        summary = self.worker.shutdown()
        self._log('info', 'recorder counters: ' + json.dumps(self.counters(), sort_keys=True))
        return summary


def main(args=None) -> int:
    return run_node(RecorderNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())
