"""Pass B of an evaluation: read the bags again, decode only the messages the selected frames need
(camera image, GT depth or cloud, recorded depth), in bag order, and hand each frame over as soon
as all of its messages are there; a message is dropped when no later frame needs it, so memory
stays bounded whatever the bag length."""
from __future__ import annotations

import sys

from ..data import bag_reader as br
from .bag_inputs import EvaluationError

__all__ = ['FrameStream']

DECODED_ROLES = ('camera', 'gt_depth', 'gt_cloud', 'pred_depth')


class FrameStream:
    """The frames of ``inputs`` (:class:`~.inputs.Inputs`) with their decoded messages;
    ``example_ids``: frames whose camera image is wanted in recorded mode (for the plots)."""

    def __init__(self, inputs, example_ids):
        self.inputs = inp = inputs
        n = inp.n_frames
        # messages each frame needs: (role, ordinal)
        needs = []
        for i in range(n):
            keys = []
            if inp.mode == 'estimator':
                keys.append(('camera', inp.match['camera'][i]))
            else:
                if inp.frame_role == 'pred_depth':
                    keys.append(('pred_depth', inp.match['pred_depth'][i]))
                cam = inp.match.get('camera', [None] * n)[i]
                if i in example_ids and cam is not None:
                    keys.append(('camera', cam))
            if inp.depth_enabled and inp.match[inp.gt_role][i] is not None:
                keys.append((inp.gt_role, inp.match[inp.gt_role][i]))
            needs.append(keys)
        self.needs = needs
        refcount = {}
        for keys in needs:
            for kk in keys:
                refcount[kk] = refcount.get(kk, 0) + 1
        self.refcount = refcount
        topic_role = {}
        for role in DECODED_ROLES:
            if role in inp.roles and any(kk[0] == role for kk in refcount):
                b, topic, msgtype = inp.roles[role]
                topic_role.setdefault((id(b), topic), []).append(role)
        self.topic_role = topic_role

    @property
    def empty(self) -> bool:
        """Nothing to decode (recorded odometry only)."""
        return not self.topic_role

    def for_each(self, process, progress: bool):
        """Call ``process(i, {role: (header stamp, payload)})`` for every frame, in order; a
        payload is an Exception instance where the message could not be decoded."""
        n = self.inputs.n_frames
        needs, refcount, topic_role = self.needs, self.refcount, self.topic_role
        bar = None
        if progress and n > 1:
            try:
                from tqdm import tqdm
                bar = tqdm(total=n, unit='frame', desc='evaluate', file=sys.stderr,
                           dynamic_ncols=True)
            except ImportError:
                bar = None
        store = {}
        counters = {}
        nxt = 0
        try:
            for bid, m in self._merged_messages():
                key = (bid, m.topic)
                ordinal = counters.get(key, 0)
                counters[key] = ordinal + 1
                for role in topic_role.get(key, ()):
                    if (role, ordinal) in refcount:
                        store[(role, ordinal)] = self._decode_data(role, m)
                while nxt < n and all(kk in store for kk in needs[nxt]):
                    process(nxt, {kk[0]: store[kk] for kk in needs[nxt]})
                    for kk in needs[nxt]:
                        refcount[kk] -= 1
                        if refcount[kk] == 0:
                            del store[kk]
                            del refcount[kk]
                    nxt += 1
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if nxt < n:
            raise EvaluationError(f'{n - nxt} frame(s) could not be assembled from the bag '
                                  '(messages missing on the second read)')

    def _merged_messages(self):
        """(bag id, BagMessage) of the needed topics; with a separate prediction bag both bags are
        read side by side, merged by header stamp (their receive times are unrelated)."""
        import heapq
        from ..data.bags import BagError, read_messages
        inp = self.inputs
        bags = {}
        for bid, topic in self.topic_role:
            b = inp.bag if id(inp.bag) == bid else inp.pbag
            bags.setdefault(bid, (b, set()))[1].add(topic)

        def stream(bid, b, topics):
            for m in read_messages(b.path, topics=topics):
                yield br.header_stamp(m.data), bid, m

        streams = [stream(bid, b, topics) for bid, (b, topics) in bags.items()]
        try:
            if len(streams) == 1:
                for _, bid, m in streams[0]:
                    yield bid, m
            else:
                for _, bid, m in heapq.merge(*streams, key=lambda x: x[0]):
                    yield bid, m
        except BagError as exc:
            raise EvaluationError(str(exc)) from None

    def _decode_data(self, role, m):
        """Raw message -> (header stamp, payload); payload is an Exception instance when the
        message cannot be decoded (reported as a skipped frame, the evaluation goes on)."""
        stamp = None
        try:
            stamp = br.header_stamp(m.data)
            msg = self.inputs.catalog.deserialize(m.data, m.msgtype)
            if role == 'camera':
                return stamp, br.rgb_from_message(msg, m.msgtype)
            if role in ('gt_depth', 'pred_depth'):
                return stamp, br.depth_from_message(msg, m.msgtype)
            return stamp, (br.cloud_to_xyz(msg), str(msg.header.frame_id))
        except Exception as exc:  # noqa: BLE001 - a broken message must not stop the evaluation
            return stamp, exc
