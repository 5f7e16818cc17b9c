"""rosbag2 writing/reading/repair without rclpy (data/bag_types, bag_storage, bag_writer, bags).

Real files, real readers (rosbags and the independent `mcap` library), real SIGKILL and a real
file-size limit (RLIMIT_FSIZE) for the disk-full path.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from depth_ego_ros.data.bag_writer import BagWriteError, BagWriter, BagWriterConfig
from depth_ego_ros.data.bags import (TypeCatalog, UnknownTypeError, bag_topics,
                                     read_messages, repair_bag, storage_files)

REPO = Path(__file__).resolve().parents[1]
IMAGE = 'sensor_msgs/msg/Image'
CATALOG = TypeCatalog()


def image_cdr(i, h=24, w=32):
    ts = CATALOG.typestore
    Image, Header, Time = (ts.types[n] for n in (IMAGE, 'std_msgs/msg/Header',
                                                 'builtin_interfaces/msg/Time'))
    data = ((np.arange(h * w * 3) + i * 7) % 251).astype(np.uint8)
    msg = Image(Header(Time(1000 + i, 5), 'cam'), h, w, 'rgb8', 0, w * 3, data)
    return bytes(ts.serialize_cdr(msg, IMAGE))


def write_bag(path, n=60, **cfg):
    spec, _ = CATALOG.spec('/cam', IMAGE)
    w = BagWriter(path, BagWriterConfig(**cfg))
    w.add_topic(spec)
    for i in range(n):
        w.write('/cam', 10 ** 9 + i * 10 ** 7, image_cdr(i))
    return w.close()


def stamps(path):
    return [CATALOG.deserialize(m.data, IMAGE).header.stamp.sec - 1000
            for m in read_messages(path)]


def mcap_decoded(path):
    """Messages of one .mcap file decoded by the `mcap` library (independent of rosbags)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    with open(path, 'rb') as f:
        return [msg for _s, _c, _m, msg in
                make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages()]


def wheel_hash(msgtype):
    """The RIHS01 hash that the installed ROS packages (rosidl) computed for ``msgtype``."""
    pkg, _, name = msgtype.split('/')
    path = Path(sys.prefix) / 'share' / pkg / 'msg' / f'{name}.json'
    if not path.is_file():
        pytest.skip(f'{path} not installed')
    hashes = json.loads(path.read_text())['type_hashes']
    return next(h['hash_string'] for h in hashes if h['type_name'] == msgtype)


@pytest.mark.parametrize('msgtype', [
    IMAGE, 'sensor_msgs/msg/CompressedImage', 'sensor_msgs/msg/CameraInfo',
    'nav_msgs/msg/Odometry', 'geometry_msgs/msg/TwistStamped', 'tf2_msgs/msg/TFMessage'])
def test_type_hash_matches_the_ros_packages(msgtype):
    d = CATALOG.definition(msgtype)
    assert d.rihs01 == wheel_hash(msgtype)
    assert d.msgdef.startswith(d.msgdef.split('\n')[0])   # ros2msg text
    if msgtype == IMAGE:
        assert 'MSG: std_msgs/Header' in d.msgdef and 'uint8[] data' in d.msgdef


def test_type_catalog_local_msg_files_and_unknown_types(tmp_path):
    msg_dir = tmp_path / 'my_msgs' / 'msg'
    msg_dir.mkdir(parents=True)
    (msg_dir / 'Tagged.msg').write_text('std_msgs/Header header\nfloat64[3] v\nstring label\n')
    cat = TypeCatalog(search_dirs=[tmp_path])
    d = cat.definition('my_msgs/msg/Tagged')
    assert d.rihs01.startswith('RIHS01_') and 'MSG: std_msgs/Header' in d.msgdef
    # the publisher-announced hash wins and a mismatch is reported
    other = cat.definition('my_msgs/msg/Tagged', expected_hash='RIHS01_' + '0' * 64)
    assert other.rihs01 == 'RIHS01_' + '0' * 64 and 'different' in other.note
    with pytest.raises(UnknownTypeError, match='nonexistent_msgs/msg/Nope'):
        cat.definition('nonexistent_msgs/msg/Nope')
    with pytest.raises(UnknownTypeError, match='not a message type name'):
        cat.definition('not a type')


@pytest.mark.parametrize('storage,compression', [('mcap', 'none'), ('mcap', 'zstd'),
                                                 ('sqlite3', 'none'), ('sqlite3', 'zstd')])
def test_roundtrip_and_split_by_size(tmp_path, storage, compression):
    bag = tmp_path / 'run'
    summary = write_bag(bag, n=60, storage=storage, compression=compression,
                        chunk_size=16 * 1024, max_bag_size=40_000)
    ext = '.mcap' if storage == 'mcap' else '.db3'
    files = storage_files(bag)
    assert [f.name for f in files] == [f'run_{i}{ext}' for i in range(len(files))]
    if compression == 'none':
        assert len(files) >= 3      # 60 x 2.3 kB split at 40 kB
    assert summary.messages == {'/cam': 60}
    assert stamps(bag) == list(range(60))
    first = CATALOG.deserialize(next(read_messages(bag)).data, IMAGE)
    assert first.encoding == 'rgb8' and first.width == 32
    assert np.array_equal(first.data, ((np.arange(24 * 32 * 3)) % 251).astype(np.uint8))
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 9 and info['storage_identifier'] == storage
    assert info['message_count'] == 60
    assert [f['path'] for f in info['files']] == [f.name for f in files]
    assert sum(f['message_count'] for f in info['files']) == 60
    topic = info['topics_with_message_count'][0]
    assert topic['topic_metadata']['type_description_hash'] == wheel_hash(IMAGE)
    assert (info['compression_mode'], info['compression_format']) == \
        (('message', 'zstd') if storage == 'sqlite3' and compression == 'zstd' else ('', ''))
    if storage == 'mcap':   # every split file is a complete MCAP file for an independent reader
        secs = [m.header.stamp.sec - 1000 for f in files for m in mcap_decoded(f)]
        assert secs == list(range(60))


def test_split_by_duration(tmp_path):
    write_bag(tmp_path / 'd', n=50, max_bag_duration=0.1)   # 10 ms apart -> 10 per file
    files = storage_files(tmp_path / 'd')
    assert len(files) == 5
    assert stamps(tmp_path / 'd') == list(range(50))


_KILLED_WRITER = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {repo!r})
    from test_bags import CATALOG, IMAGE, image_cdr
    from depth_ego_ros.data.bag_writer import BagWriter, BagWriterConfig
    spec, _ = CATALOG.spec('/cam', IMAGE)
    w = BagWriter(sys.argv[1], BagWriterConfig(storage=sys.argv[2], chunk_size=8192,
                                               max_bag_size=int(sys.argv[3])))
    w.add_topic(spec)
    for i in range(100):
        w.write('/cam', 10**9 + i * 10**7, image_cdr(i))
        if i == 72:
            w.flush(0)                 # everything up to message 72 is on disk
            print('flushed', flush=True)
            time.sleep(60)             # killed here
''')


@pytest.mark.timeout(60)
@pytest.mark.parametrize('storage,split', [('mcap', 0), ('mcap', 60_000), ('sqlite3', 0)])
def test_sigkill_then_repair_recovers_everything_flushed(tmp_path, storage, split):
    script = tmp_path / 'writer.py'
    script.write_text(_KILLED_WRITER.format(repo=str(REPO)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / 'test'), str(REPO)]))
    bag = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, str(script), str(bag), storage, str(split)],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == 'flushed'
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    if split:   # finished files are readable right away, without repair
        done = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
        assert len(done['files']) >= 1
        assert stamps(bag) == list(range(sum(f['message_count'] for f in done['files'])))
    else:       # metadata.yaml lists finished files only: none yet
        assert list(read_messages(bag)) == []
    report = repair_bag(bag)
    assert report.metadata_written
    assert stamps(bag) == list(range(73))
    assert bag_topics(bag)['/cam']['hash'] == wheel_hash(IMAGE)
    info = yaml.safe_load((bag / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['custom_data']['depth_ego.repaired'] == 'true'
    # repairing a sound bag changes nothing
    again = repair_bag(bag)
    assert all(f.status == 'ok' for f in again.files) and stamps(bag) == list(range(73))


def test_repair_of_truncated_mcap_keeps_a_prefix(tmp_path):
    """Cut one file at many places: repair always yields the first messages, in order, and
    never fewer than the chunks that lie completely before the cut."""
    src = tmp_path / 'src'
    write_bag(src, n=40, chunk_size=8192)
    data = storage_files(src)[0].read_bytes()
    for cut in np.linspace(200, len(data) - 1, 9).astype(int):
        bag = tmp_path / f'cut{cut}'
        bag.mkdir()
        (bag / f'cut{cut}_0.mcap').write_bytes(data[:cut])
        repair_bag(bag, keep_damaged=True)
        got = stamps(bag) if storage_files(bag) else []
        assert got == list(range(len(got)))
        assert len(got) >= (cut - 9000) // 2400 - 4   # ~2.4 kB per message, 8 kB chunks
    assert (tmp_path / f'cut{cut}' / f'cut{cut}_0.mcap.damaged').exists()


_LIMITED_WRITER = textwrap.dedent('''
    import resource, sys
    sys.path.insert(0, {repo!r})
    from test_bags import CATALOG, IMAGE, image_cdr
    from depth_ego_ros.data.bag_writer import BagWriteError, BagWriter, BagWriterConfig
    limit = int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    spec, _ = CATALOG.spec('/cam', IMAGE)
    w = BagWriter(sys.argv[1], BagWriterConfig(storage=sys.argv[2], chunk_size=8192))
    w.add_topic(spec)
    try:
        for i in range(400):
            w.write('/cam', 10**9 + i * 10**7, image_cdr(i))
            if i % 10 == 9:
                w.flush(0)
    except BagWriteError as exc:
        print('error', i, exc, flush=True)
''')


@pytest.mark.timeout(60)
@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_disk_full_leaves_a_valid_bag(tmp_path, storage):
    """A write that fails (here: file size limit, EFBIG; ENOSPC takes the same path) finalises
    the bag with what was on disk: readable at once, no repair needed."""
    script = tmp_path / 'writer.py'
    script.write_text(_LIMITED_WRITER.format(repo=str(REPO)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / 'test'), str(REPO)]))
    bag = tmp_path / 'full'
    out = subprocess.run([sys.executable, str(script), str(bag), storage, '150000'],
                         capture_output=True, text=True, env=env, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('error'), out.stdout + out.stderr
    assert 'File too large' in out.stdout or 'disk I/O error' in out.stdout
    got = stamps(bag)
    assert 20 <= len(got) < 400 and got == list(range(len(got)))
    assert all(f.stat().st_size <= 150000 for f in bag.iterdir())


def test_bag_repair_cli(tmp_path, capsys):
    from depth_ego_ros.cli.main import main
    bag = tmp_path / 'b'
    write_bag(bag, n=5)
    (bag / 'metadata.yaml').unlink()
    assert main(['bag-repair', str(bag), '--dry-run']) == 0
    assert not (bag / 'metadata.yaml').exists()
    assert main(['bag-repair', str(bag)]) == 0
    assert 'b_0.mcap: ok, 5 messages' in capsys.readouterr().out
    assert stamps(bag) == list(range(5))
    assert main(['bag-repair', str(tmp_path / 'missing')]) == 1


def test_writer_refuses_bad_config_and_existing_bags(tmp_path):
    with pytest.raises(ValueError, match='storage'):
        BagWriterConfig(storage='rosbag1').validate()
    with pytest.raises(ValueError, match='chunk_size'):
        BagWriterConfig(chunk_size=10 * 2 ** 20).validate()
    write_bag(tmp_path / 'x', n=1)
    with pytest.raises(FileExistsError):
        write_bag(tmp_path / 'x', n=1)
    w = BagWriter(tmp_path / 'closed')
    w.close()
    with pytest.raises(BagWriteError):
        w.write('/cam', 1, b'')
