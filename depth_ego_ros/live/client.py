"""A Foxglove WebSocket client (the protocol the Foxglove SDK's server speaks, subprotocol
``foxglove.sdk.v1``): read the advertised channels, subscribe, receive message data.

Used by the tests, the live-view bench and the screenshot script, i.e. what Foxglove or
Lichtblick do when they connect. No ROS here: payloads are returned as the bytes the server sent
(CDR for the live view's ROS 2 channels; decode them with rosbags or rclpy).

    with FoxgloveClient('ws://127.0.0.1:8765') as c:
        c.wait_channels(['/depth'], timeout=10)
        c.subscribe(['/depth'])
        for m in c.messages(timeout=5):
            print(m.topic, m.log_time, len(m.data))
"""
from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass

SUBPROTOCOL = 'foxglove.sdk.v1'
OP_MESSAGE_DATA = 0x01


@dataclass
class Message:
    topic: str
    channel_id: int
    log_time: int         # ns, as the server stamped it
    data: bytes
    received: float       # time.monotonic() at arrival


class FoxgloveClient:
    def __init__(self, url: str, timeout: float = 30.0):
        from websockets.sync.client import connect
        self._connection = connect(url, subprotocols=[SUBPROTOCOL], max_size=None,
                                   open_timeout=timeout)
        self.ws = self._connection.__enter__()
        self.server_info: dict | None = None
        self.channels: dict[int, dict] = {}        # channel id -> advertised channel
        self._sub_of_channel: dict[int, int] = {}  # channel id -> subscription id
        self._channel_of_sub: dict[int, int] = {}
        self._next_sub = 1
        self.status: list[dict] = []

    # -- channels -----------------------------------------------------------------------------
    def topics(self) -> dict[str, dict]:
        return {c['topic']: c for c in self.channels.values()}

    def wait_channels(self, topics, timeout: float) -> dict[str, dict]:
        """Read until every topic in ``topics`` is advertised; -> {topic: channel}."""
        end = time.monotonic() + timeout
        while not set(topics) <= set(self.topics()):
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f'not advertised within {timeout} s: '
                                   f'{sorted(set(topics) - set(self.topics()))}')
            self._receive(left)
        return {t: self.topics()[t] for t in topics}

    def subscribe(self, topics):
        subs = []
        for topic in topics:
            cid = self.topics()[topic]['id']
            if cid in self._sub_of_channel:
                continue
            sid, self._next_sub = self._next_sub, self._next_sub + 1
            self._sub_of_channel[cid], self._channel_of_sub[sid] = sid, cid
            subs.append({'id': sid, 'channelId': cid})
        if subs:
            self.ws.send(json.dumps({'op': 'subscribe', 'subscriptions': subs}))

    def unsubscribe(self, topics):
        ids = []
        for topic in topics:
            cid = self.topics()[topic]['id']
            sid = self._sub_of_channel.pop(cid, None)
            if sid is not None:
                self._channel_of_sub.pop(sid, None)
                ids.append(sid)
        if ids:
            self.ws.send(json.dumps({'op': 'unsubscribe', 'subscriptionIds': ids}))

    # -- receiving ----------------------------------------------------------------------------
    def _receive(self, timeout: float) -> Message | None:
        """One frame from the server: JSON ones update the state (-> None), message data ->
        Message. TimeoutError when nothing came within ``timeout``."""
        frame = self.ws.recv(timeout=max(timeout, 0.0))
        if isinstance(frame, str):
            msg = json.loads(frame)
            op = msg.get('op')
            if op == 'serverInfo':
                self.server_info = msg
            elif op == 'advertise':
                for ch in msg['channels']:
                    self.channels[ch['id']] = ch
            elif op == 'unadvertise':
                for cid in msg['channelIds']:
                    self.channels.pop(cid, None)
            elif op == 'status':
                self.status.append(msg)
            return None
        if frame and frame[0] == OP_MESSAGE_DATA:
            sid, log_time = struct.unpack_from('<IQ', frame, 1)
            cid = self._channel_of_sub.get(sid)
            if cid is None:                # a late message of a subscription we ended
                return None
            return Message(self.channels[cid]['topic'], cid, log_time, bytes(frame[13:]),
                           time.monotonic())
        return None

    def messages(self, timeout: float, until=None):
        """Yield received messages for up to ``timeout`` seconds (or until ``until()``)."""
        end = time.monotonic() + timeout
        while not (until and until()):
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                m = self._receive(left)
            except TimeoutError:
                return
            if m is not None:
                yield m

    def close(self):
        self._connection.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ['FoxgloveClient', 'Message', 'SUBPROTOCOL']
