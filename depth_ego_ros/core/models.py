"""Network assembly and loading for the Estimator: the inference wrappers around the networks
(:class:`DepthNet`, :class:`PackNetDepth`, :class:`PoseNet`, :class:`PoseExpPose`: one tensor in,
the outputs the runners export and run), :func:`build_networks` (a configuration + checkpoint ->
the wrappers, weights loaded), :func:`save_networks` (the inverse) and
:func:`export_estimator_models` (build + ``core/export.py``'s export, for ``depth-ego export``).
Checkpoint file layouts are :mod:`depth_ego_ros.core.checkpoints`'s.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from . import checkpoints as ckpt
from .names import MODELS, PACKNET_WIDTHS, POSE_MODELS
from .networks.depth_decoder import DepthDecoder
from .networks.pose_decoder import PoseDecoder
from .networks.intrinsics_head import IntrinsicsHead
from .networks.packnet import PACKNET_MIN_DEPTH, PackNet01
from .networks.posexp_net import PoseExpNet
from .networks.resnet_encoder import ResnetEncoder, parse_num_layers

__all__ = ['DepthNet', 'PackNetDepth', 'PoseNet', 'PoseExpPose', 'build_networks',
           'save_networks', 'export_estimator_models', 'MODELS', 'POSE_MODELS']

# moved out of core/estimator.py: keeps that logger name so log filters/levels still match
log = logging.getLogger('depth_ego_ros.core.estimator')


class DepthNet(nn.Module):
    """Encoder + decoder: image [B,3,H,W] in [0,1] -> finest sigmoid disparity [B,1,H,W]."""

    def __init__(self, encoder: ResnetEncoder, decoder: DepthDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, image):
        return self.decoder(self.encoder(image))[0]


class PackNetDepth(nn.Module):
    """PackNet01 in the DepthNet role: image [B,3,H,W] in [0,1] -> finest sigmoid output
    [B,1,H,W] (``net(image)[0]``). Its depth convention is PackNet-SfM's (inverse depth =
    sigmoid / ``net.min_depth``): convert with :meth:`disp_to_depth`, not monodepth2's."""

    def __init__(self, net: PackNet01):
        super().__init__()
        self.net = net

    def forward(self, image):
        return self.net(image)[0]

    def disp_to_depth(self, disp, min_depth: float = 0.1, max_depth: float = 100.0):
        return self.net.disp_to_depth(disp, min_depth, max_depth)


class PoseNet(nn.Module):
    """Pose encoder (2 stacked frames) + decoder: pair [B,6,H,W] = [frame_a, frame_b] in [0,1]
    -> (axisangle [B,3], translation [B,3]) of ``T_b_a`` (monodepth2's first prediction).

    With an ``intrinsics`` head (learned intrinsics) a third output [B,4] =
    (fx/W, fy/H, ox, oy) from the encoder's last feature (IntrinsicsHead.normalized)."""

    def __init__(self, encoder: ResnetEncoder, decoder: PoseDecoder,
                 intrinsics: IntrinsicsHead | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.intrinsics = intrinsics
        self.output_names = ('axisangle', 'translation') + (('intrinsics',) if intrinsics else ())

    def forward(self, pair):
        feats = self.encoder(pair)
        axisangle, translation = self.decoder([feats])
        outs = (axisangle[:, 0, 0], translation[:, 0, 0])
        if self.intrinsics is not None:
            outs = outs + (torch.cat(self.intrinsics.normalized(feats[-1]), 1),)
        return outs


class PoseExpPose(nn.Module):
    """PoseExpNet in the pose role: pair [B,6,H,W] = [previous, current] -> target = current,
    source(s) = previous; outputs (axisangle [B,3], translation [B,3]) of ``T_prev_curr``
    (PoseExpNet's ``T_src_tgt``: NO inversion, unlike monodepth2's PoseNet), then optionally
    ``intrinsics`` [B,4] (head on the 256-channel bottleneck) and ``explainability``
    [B,1,H,W] (mask of the current frame w.r.t. the previous one, in [0,1]).
    A network trained with N > 1 sources gets the previous frame as every source; source 0's
    pose and mask are returned."""
    pose_is_prev_curr = True

    def __init__(self, net: PoseExpNet, intrinsics: IntrinsicsHead | None = None):
        super().__init__()
        self.net = net
        self.intrinsics = intrinsics
        self.output_names = ('axisangle', 'translation') + \
            (('intrinsics',) if intrinsics is not None else ()) + \
            (('explainability',) if net.output_exp else ())

    def forward(self, pair):
        prev, cur = pair[:, :3], pair[:, 3:]
        out = self.net(cur, [prev] * self.net.num_sources)
        outs = (out['axisangle'][:, 0], out['translation'][:, 0])
        if self.intrinsics is not None:
            outs = outs + (torch.cat(self.intrinsics.normalized(out['bottleneck']), 1),)
        if self.net.output_exp:
            outs = outs + (out['masks'][0][:, :1],)
        return outs


def _load_or_hint(module, path, hint):
    try:
        return ckpt.load_into(module, path)
    except ckpt.CheckpointError as exc:
        h = hint()
        raise ckpt.CheckpointError(f'{exc}; {h}' if h else str(exc)) from None


def _checkpoint_hint(checkpoint, model: str, pose_model: str) -> str:
    """'the checkpoint holds ...: use model=...' when its files say another architecture."""
    try:
        m = ckpt.read_checkpoint_meta(checkpoint)
    except (ckpt.CheckpointError, OSError):
        return ''
    hints = []
    if m['model'] and m['model'] != model:
        hints.append(f"model={m['model']!r}")
    if m['pose_model'] and m['pose_model'] != pose_model:
        hints.append(f"pose_model={m['pose_model']!r}")
    return f'the checkpoint holds other networks: use {", ".join(hints)}' if hints else ''


def build_networks(model: str = 'resnet18', checkpoint: str | os.PathLike | None = None,
                   with_pose: bool = True, seed: int = 0, pose_model: str = 'monodepth2',
                   learned_intrinsics: bool = False):
    """Create (DepthNet | PackNetDepth, PoseNet | PoseExpPose | None, meta) in eval mode on the CPU.

    model: resnet18 / resnet50 (monodepth2 depth + pose nets) or packnet01 / packnet01-w0.5 /
        packnet01-w0.25 (PackNet01 depth; the pose net stays monodepth2's ResNet-18 one unless
        ``pose_model='posexp'``).
    checkpoint: a directory (monodepth2 layout; for PackNet a depth.pth written by
        :func:`~depth_ego_ros.core.checkpoints.save_packnet_depth`; PoseExpNet in pose.pth by
        ``save_posexp``; the intrinsics head in intrinsics.pth) or, for PackNet, a PackNet-SfM
        ``.ckpt`` file (depth only). Weights are loaded from it (CheckpointError if they do not
        fit, with a hint when the files hold another architecture); the pose net is None when
        the checkpoint has none. Without one the weights are random but reproducible (seeded,
        without touching the global RNG state).
    learned_intrinsics: add an IntrinsicsHead on the pose encoder's bottleneck (loaded from
        intrinsics.pth when the checkpoint has one, else its prior: fx = W, fy = H, centred).
    meta: encoder.pth's {'height', 'width', 'use_stereo'} for ResNet checkpoints (empty without
        a checkpoint); for PackNet checkpoints what the files say ('model', 'height', 'width',
        'packnet' constructor args, 'intrinsics_running' when stored).
    """
    if model not in MODELS:
        raise ValueError(f'model must be one of {MODELS}, got {model!r}')
    if pose_model not in POSE_MODELS:
        raise ValueError(f'pose_model must be one of {POSE_MODELS}, got {pose_model!r}')
    packnet = model in PACKNET_WIDTHS
    d = Path(checkpoint) if checkpoint is not None else None
    def hint() -> str:       # only read the checkpoint's other files when something is wrong
        return _checkpoint_hint(d, model, pose_model) if d is not None else ''
    meta: dict = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if packnet:
            depth_net = PackNetDepth(PackNet01(width=PACKNET_WIDTHS[model]))
            pose_layers = 18
        else:
            enc = ResnetEncoder(parse_num_layers(model), num_input_images=1)
            depth_net = DepthNet(enc, DepthDecoder(enc.num_ch_enc))
            pose_layers = parse_num_layers(model)
        pose_net = None
        if with_pose:
            if pose_model == 'posexp':
                pose_net = PoseExpPose(PoseExpNet(num_sources=1, output_exp=True))
            else:
                penc = ResnetEncoder(pose_layers, num_input_images=2)
                pose_net = PoseNet(penc, PoseDecoder(penc.num_ch_enc, num_input_features=1,
                                                     num_frames_to_predict_for=2))

    if d is not None:
        # ---- depth
        if packnet and d.is_file():
            from .packnet_checkpoint import load_packnet_checkpoint
            net, info = load_packnet_checkpoint(d)
            if net.width != PACKNET_WIDTHS[model]:
                raise ckpt.CheckpointError(
                    f'{d}: the checkpoint holds PackNet01(width={net.width:g}): use '
                    f'model={ckpt.packnet_model_name(net.width)!r}')
            depth_net = PackNetDepth(net)
            meta = {'model': model, 'packnet': info['args'], 'source': 'packnet_ckpt'}
            pose_net = None            # a PackNet-SfM .ckpt carries no pose net of ours
            if learned_intrinsics:
                log.warning('%s: a .ckpt file has no pose network: learned intrinsics unavailable', d)
        elif d.is_file():
            raise ckpt.CheckpointError(f"{d}: a file checkpoint is a PackNet-SfM .ckpt (use model="
                                       f"'packnet01...'); {model} needs a monodepth2 checkpoint directory")
        elif not d.is_dir():
            raise ckpt.CheckpointError(f'{d}: checkpoint directory not found')
        elif packnet:
            path = d / ckpt.DEPTH_FILE
            extras = ckpt.read_state_dict(path) if path.is_file() else None
            if extras is None or not str(extras.get(ckpt.MODEL_KEY, '')).startswith('packnet01'):
                raise ckpt.CheckpointError(
                    f'{d}: no PackNet depth network ({ckpt.DEPTH_FILE} with a {ckpt.MODEL_KEY!r} '
                    f'entry naming a packnet01 model)' + (f'; {hint()}' if hint() else ''))
            if extras[ckpt.MODEL_KEY] != model:
                raise ckpt.CheckpointError(f'{path}: holds {extras[ckpt.MODEL_KEY]}: use '
                                           f'model={extras[ckpt.MODEL_KEY]!r}')
            net = PackNet01(version=extras.get('packnet_version', 'A'), width=PACKNET_WIDTHS[model],
                            d=int(extras.get('packnet_d', 8)),
                            min_depth=float(extras.get('packnet_min_depth', PACKNET_MIN_DEPTH)))
            ckpt.load_into(net, path, extras)
            depth_net = PackNetDepth(net)
            meta = {'model': model, 'height': extras.get('height'), 'width': extras.get('width'),
                    'source': 'packnet_dir'}
        else:
            if not (d / ckpt.ENCODER_FILE).is_file() and hint():
                raise ckpt.CheckpointError(f'{d}: {ckpt.ENCODER_FILE} not found; {hint()}')
            meta = ckpt.load_monodepth2(d, depth_net.encoder, depth_net.decoder)
        # ---- pose
        if pose_net is not None and d.is_dir():
            pose_path = d / ckpt.POSE_FILE
            if not pose_path.is_file():
                pose_net = None
            else:
                pdata = ckpt.read_state_dict(pose_path)
                is_posexp = pdata.get(ckpt.MODEL_KEY) == 'posexp'
                if pose_model == 'posexp':
                    if not is_posexp:
                        raise ckpt.CheckpointError(
                            f"{pose_path}: not a PoseExpNet (no {ckpt.MODEL_KEY}='posexp' entry)"
                            + (f'; {hint()}' if hint() else "; use pose_model='monodepth2'"))
                    n_src = int(pdata.get('num_sources', 1))
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(seed)
                        net = PoseExpNet(num_sources=n_src, output_exp=bool(pdata.get('output_exp', True)))
                    ckpt.load_into(net, pose_path, pdata)
                    if n_src > 1:
                        log.info('%s: PoseExpNet trained with %d sources: the previous frame is given '
                                 'as every source, source 0 pose/mask used', pose_path, n_src)
                    pose_net = PoseExpPose(net)
                elif is_posexp:
                    raise ckpt.CheckpointError(f"{pose_path}: holds a PoseExpNet: use pose_model='posexp'")
                elif not ckpt.has_pose(d):
                    pose_net = None
                else:
                    _load_or_hint(pose_net.encoder, d / ckpt.POSE_ENCODER_FILE, hint)
                    ckpt.load_into(pose_net.decoder, pose_path, pdata)
    # ---- learned intrinsics
    if learned_intrinsics and pose_net is not None:
        if isinstance(pose_net, PoseExpPose):
            channels = 256
        else:
            channels = int(pose_net.encoder.num_ch_enc[-1])
        head = IntrinsicsHead(channels)
        ipath = d / ckpt.INTRINSICS_FILE if d is not None and d.is_dir() else None
        if ipath is not None and ipath.is_file():
            idata = ckpt.load_intrinsics_head(head, ipath)
            if idata.get('running_value') is not None:
                meta['intrinsics_running'] = list(idata['running_value'])
        elif d is not None:
            log.warning('checkpoint %s has no %s: the intrinsics head starts from its prior '
                        '(fx = W, fy = H, centred principal point)', d, ckpt.INTRINSICS_FILE)
        if isinstance(pose_net, PoseExpPose):
            pose_net = PoseExpPose(pose_net.net, head)
        else:
            pose_net = PoseNet(pose_net.encoder, pose_net.decoder, head)
    depth_net.eval()
    if pose_net is not None:
        pose_net.eval()
    return depth_net, pose_net, meta


def save_networks(directory, depth_net, pose_net=None, *, model: str, height: int, width: int,
                  running_intrinsics: dict | None = None) -> Path:
    """Write networks built by :func:`build_networks` so that it loads them back: monodepth2
    layout for the ResNet models, ``depth.pth`` with a ``model`` entry for PackNet, ``pose.pth``
    with ``model='posexp'`` for PoseExpNet, ``intrinsics.pth`` for an intrinsics head."""
    d = Path(directory)
    if isinstance(depth_net, PackNetDepth):
        ckpt.save_packnet_depth(d, depth_net.net, model=model, height=height, width=width)
        if isinstance(pose_net, PoseNet):
            d.mkdir(parents=True, exist_ok=True)
            ckpt._atomic_save(ckpt._tensors(pose_net.encoder), d / ckpt.POSE_ENCODER_FILE)
            ckpt._atomic_save(ckpt._tensors(pose_net.decoder), d / ckpt.POSE_FILE)
    else:
        ckpt.save_monodepth2(d, depth_net.encoder, depth_net.decoder,
                             *((pose_net.encoder, pose_net.decoder) if isinstance(pose_net, PoseNet)
                               else (None, None)), height=height, width=width)
    if isinstance(pose_net, PoseExpPose):
        ckpt.save_posexp(d, pose_net.net)
    head = getattr(pose_net, 'intrinsics', None) if pose_net is not None else None
    if head is not None:
        ckpt.save_intrinsics_head(d, head, running_intrinsics)
    return d

def export_estimator_models(out_dir, fmt: str = 'onnx', *, model: str = 'resnet18',
                            pose_model: str = 'monodepth2', learned_intrinsics: bool = False,
                            checkpoint=None, width: int = 640, height: int = 192, **kwargs) -> dict:
    """Build the networks of an Estimator configuration (:func:`build_networks`) and export them
    with :func:`~depth_ego_ros.core.export.export_models` (``kwargs``: opset, fp16, max_batch,
    device, tolerances, num_threads). The manifest records ``pose_model``,
    ``learned_intrinsics`` and, for PackNet, ``packnet_min_depth``, so that
    ``EstimatorConfig(exported_model_dir=out_dir)`` runs them like the torch networks."""
    from .export import export_models
    depth_net, pose_net, _ = build_networks(model, checkpoint, pose_model=pose_model,
                                            learned_intrinsics=learned_intrinsics)
    extra = {'pose_model': pose_model,
             'learned_intrinsics': bool(learned_intrinsics and pose_net is not None)}
    if isinstance(depth_net, PackNetDepth):
        extra['packnet_min_depth'] = float(depth_net.net.min_depth)
    return export_models(depth_net, pose_net, out_dir, fmt, width, height, model=model,
                         checkpoint=checkpoint, extra=extra, **kwargs)

