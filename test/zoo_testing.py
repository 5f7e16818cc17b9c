"""Helpers for the model-zoo tests: archives in the released layouts, built from this project's
own networks, a loopback HTTP server that serves them (whole, truncated, or cut off mid-file),
and a registry file pointing at it.

Archives (tiny resolution metadata, real network shapes):
* ``mono.zip``: monodepth2's released layout (encoder.pth with height/width/use_stereo,
  depth.pth, pose_encoder.pth, pose.pth at the archive root), ResNet-18;
* ``stereo.zip``: the same without pose networks (monodepth2's stereo models);
* ``packnet.ckpt``: PackNet-SfM's released layout (``state_dict`` with ``model.depth_net.``
  keys + ``config``), PackNet01 at width 0.25;
* ``resnet18.pth``: a torchvision ResNet-18 state dict (the ImageNet weights' layout).
"""
from __future__ import annotations

import collections
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

RES = 64           # training resolution written into encoder.pth


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _zip_dir(src: Path, dest: Path):
    with zipfile.ZipFile(dest, 'w', compression=zipfile.ZIP_STORED) as z:
        for f in sorted(src.iterdir()):
            z.write(f, f.name)


def build_archives(root: Path) -> dict:
    """Write the archives into ``root``; -> {key: path} plus 'mono_dir' (the unzipped model)."""
    import torch
    import torchvision
    from depth_ego_ros.core.estimator import build_networks, save_networks
    from depth_ego_ros.core.packnet_checkpoint import save_packnet_checkpoint
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    depth, pose, _ = build_networks('resnet18', None, with_pose=True, seed=11)
    mono = save_networks(root / 'mono_dir', depth, pose, model='resnet18', height=RES, width=RES)
    _zip_dir(mono, root / 'mono.zip')
    stereo = save_networks(root / 'stereo_dir', depth, None, model='resnet18', height=RES, width=RES)
    _zip_dir(stereo, root / 'stereo.zip')
    pn_depth, _, _ = build_networks('packnet01-w0.25', None, with_pose=False, seed=12)
    save_packnet_checkpoint(pn_depth.net, root / 'packnet.ckpt')
    # PackNet-SfM's DepthResNet: monodepth2's nets under model.depth_net.{encoder,decoder}.
    sd = {f'model.depth_net.encoder.{k}': v for k, v in depth.encoder.state_dict().items()}
    sd.update({f'model.depth_net.decoder.{k}': v for k, v in depth.decoder.state_dict().items()})
    sd.update({f'model.pose_net.encoder.{k}': v for k, v in pose.encoder.state_dict().items()})
    torch.save({'state_dict': sd, 'epoch': 50, 'config': {'model': {'depth_net': {
        'name': 'DepthResNet', 'version': '18pt'}}}}, root / 'packnet_resnet.ckpt')
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(13)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / 'resnet18.pth')
    out.update(mono=root / 'mono.zip', stereo=root / 'stereo.zip', packnet=root / 'packnet.ckpt',
               packnet_resnet=root / 'packnet_resnet.ckpt',
               imagenet=root / 'resnet18.pth', mono_dir=mono)
    return out


class ArchiveServer:
    """http.server in a thread on 127.0.0.1 serving ``root``:
    ``/good/F`` the whole file, ``/truncated/F`` its first half (announced as such),
    ``/close/F`` announces the whole length, sends half and closes the connection."""

    def __init__(self, root: Path):
        root = Path(root)
        self.requests = requests = collections.Counter()     # GETs per file name

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                _, mode, name = self.path.split('/', 2)
                requests[name] += 1
                f = root / name
                if mode not in ('good', 'truncated', 'close') or not f.is_file():
                    self.send_error(404)
                    return
                data = f.read_bytes()
                half = data[:len(data) // 2]
                self.send_response(200)
                self.send_header('Content-Type', 'application/octet-stream')
                self.send_header('Content-Length', str(len(half if mode == 'truncated' else data)))
                self.end_headers()
                self.wfile.write(data if mode == 'good' else half)
                if mode == 'close':
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def entry(url: str, fmt: str, model: str, **kw) -> dict:
    e = {'kind': 'checkpoint', 'method': 'monodepth2', 'model': model, 'url': url,
         'format': fmt, 'licence': 'Monodepth2 licence: NON-COMMERCIAL use only (test)',
         'width': RES, 'height': RES}
    e.update(kw)
    return e


def standard_registry(server: ArchiveServer, files: dict) -> dict:
    """Entries for every archive, served whole, with their real checksums."""
    u = server.url + '/good/'
    return {
        'tiny_mono': entry(u + 'mono.zip', 'monodepth2_zip', 'resnet18', pose=True,
                           md5=md5(files['mono'])),
        'tiny_stereo': entry(u + 'stereo.zip', 'monodepth2_zip', 'resnet18', pose=False,
                             md5=md5(files['stereo']), stereo_scale_factor=5.4),
        'tiny_packnet': entry(u + 'packnet.ckpt', 'packnet_ckpt', 'packnet01-w0.25',
                              method='packnet-sfm', licence='MIT (test)'),
        'tiny_packnet_resnet': entry(u + 'packnet_resnet.ckpt', 'packnet_ckpt', 'resnet18',
                                     method='packnet-sfm', licence='MIT (test)'),
        'resnet18_imagenet': entry(u + 'resnet18.pth', 'torchvision_resnet', 'resnet18',
                                   kind='imagenet', method='torchvision', licence='BSD-3-Clause',
                                   sha256_prefix=sha256(files['imagenet'])[:8]),
    }


def write_registry(path: Path, models: dict) -> Path:
    path.write_text(json.dumps({'version': 1, 'models': models}, indent=1))
    return path
