"""The trainable depth + pose networks and their initialisation.

:class:`SfMModel` holds the networks of a checkpoint under the names the checkpoint files use,
so one ``nn.Module`` can be wrapped in DistributedDataParallel and saved/loaded in the layouts
the Estimator reads (:func:`depth_ego_ros.core.models.build_networks`):

=====================  =============================================  ==========================
role                   monodepth2 (default)                           other methods
=====================  =============================================  ==========================
depth (``depth_model``) ``encoder`` (ResnetEncoder) + ``depth``       ``packnet01*``: ``depth`` =
                       (DepthDecoder) -> encoder.pth, depth.pth       PackNet01, ``encoder`` None
                                                                      -> depth.pth (save_packnet_depth)
pose (``pose_model``)  ``pose_encoder`` + ``pose`` (PoseDecoder)      ``posexp``: ``pose`` =
                       -> pose_encoder.pth, pose.pth                  PoseExpNet, ``pose_encoder``
                                                                      None -> pose.pth (save_posexp)
intrinsics             ``intrinsics`` = IntrinsicsHead or None -> intrinsics.pth
extras                 ``extras`` (nn.ModuleDict, empty): optional further sub-networks; each is
                       saved as ``<name>.pth`` beside the others and loaded back by
                       :meth:`SfMModel.load_extras`. ``extras['object_motion']`` =
                       ObjectMotionNet -> object_motion.pth in :func:`~depth_ego_ros.core.
                       object_motion.save_object_motion`'s format (read by load_object_motion);
                       ``extras['object_size']`` = ObjectSizePrior -> object_size.pth
                       (save_object_size / load_object_size)
=====================  =============================================  ==========================

Object motion (``extras['object_motion']``, training only): with ``instance_masks`` the forward
pass also runs the object-motion net on (target, each source) and returns each object's
axis-angle and translation per source; its translations get the same ``translation_scale``
reparametrisation as the pose network's (folded into object_motion.pth when saving).

Forward pass (monodepth2, "separate pose encoder, pairs"): the depth network sees the target
frame and returns the sigmoid disparity at every loss scale; monodepth2's pose network sees each
(source, target) pair **in temporal order** and its first prediction is turned into
``T_src_tgt`` (target camera -> source camera) -- inverted for sources before the target.
PoseExpNet sees the target and all sources at once (in ``frame_offsets`` order) and predicts
``T_src_tgt`` for each source directly (no inversion), plus the explainability masks.

Output scales (training only): both pose networks multiply their outputs by 0.01, which suits
scale-free training but makes metric translations (tenths of a metre to a metre per frame,
imposed by the velocity loss) take thousands of Adam steps to reach. ``translation_scale`` c
reparametrises the translation rows of the last pose convolution (monodepth2's ``pose.net[-1]``,
PoseExpNet's ``pose_pred``; both order their 6 outputs per frame as axis-angle, translation):
the network is trained to output t / c and the model multiplies by c, which for Adam is the same
as a c-times larger learning rate on those rows. ``rotation_scale`` does the same for the
axis-angle rows. Checkpoints are always written with the factors folded back into the weights
(and they are divided out when loading), so the Estimator runs them unchanged.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path

import torch
from torch import nn

from ..core import checkpoints as ckpt
from ..core.models import build_networks
from ..core.geometry import pose_vec_to_mat
from ..core.names import PACKNET_WIDTHS, POSE_MODELS
from ..core.networks.depth_decoder import disp_to_depth as md2_disp_to_depth
from ..core.object_motion import (ObjectMotionNet, ObjectSizePrior, load_object_motion,
                                  load_object_size, save_object_motion, save_object_size)
from ..core.networks.intrinsics_head import IntrinsicsHead
from ..core.networks.packnet import PackNet01
from ..core.networks.pose_decoder import POSE_OUTPUT_SCALE
from ..core.networks.posexp_net import POSE_SCALE as POSEXP_SCALE, PoseExpNet

__all__ = ['SfMModel', 'build_model', 'init_depth_output', 'init_pose_forward',
           'disparity_for_depth', 'POSE_BOTTLENECK_CHANNELS']

log = logging.getLogger(__name__)

#: channels of the bottleneck the intrinsics head reads, per pose network
POSE_BOTTLENECK_CHANNELS = {'posexp': 256}


class SfMModel(nn.Module):
    """Depth and pose networks trained together.

    ``forward(target [B,3,H,W], sources [B,S,3,H,W], offsets)`` ->
    ``(disps, poses, translations)``: disparities per scale (finest first, [B,1,H/2^s,W/2^s]),
    ``T_src_tgt`` [B,S,4,4] and the raw network translations [B,S,3] (the velocity loss uses
    their norm, which inversion does not change). With ``return_dict=True`` a dict with those
    under 'disps', 'poses', 'translations' and also 'K' (learned intrinsics [B,3,3] for the
    images as given, or None), 'masks' / 'mask_logits' (PoseExpNet's explainability, per scale
    {s: [B,S,h,w]} / {s: [B,S,2,h,w]}, or None), 'source_disps' ([B,S,1,H,W] finest disparity of
    every source, with ``source_depth=True``, else None), 'object_axisangle' /
    'object_translation' ([B,S,M,3] per source and object slot, with ``instance_masks`` and an
    ``extras['object_motion']`` net, else None; zero for empty slots), 'object_log_height'
    (the ``extras['object_size']`` prior's log heights [C], else None).
    """

    def __init__(self, depth_encoder, depth_decoder, pose_encoder, pose_decoder, scales=(0, 1, 2, 3),
                 translation_scale: float = 1.0, rotation_scale: float = 1.0, *,
                 intrinsics: IntrinsicsHead | None = None, depth_model: str | None = None):
        super().__init__()
        self.encoder = depth_encoder
        self.depth = depth_decoder
        self.pose_encoder = pose_encoder
        self.pose = pose_decoder
        self.intrinsics = intrinsics
        self.extras = nn.ModuleDict()
        self.packnet = isinstance(depth_decoder, PackNet01)
        self.posexp = isinstance(pose_decoder, PoseExpNet)
        if self.packnet != (depth_encoder is None) or self.posexp != (pose_encoder is None):
            raise ValueError('PackNet01 / PoseExpNet come without a separate encoder; the '
                             'monodepth2 networks need theirs')
        if depth_model is None:
            depth_model = (_packnet_name(depth_decoder) if self.packnet
                           else f'resnet{depth_encoder.num_layers}')
        self.depth_model = depth_model
        self.pose_model = 'posexp' if self.posexp else 'monodepth2'
        self.scales = tuple(scales)
        self.translation_scale = 1.0
        self.rotation_scale = 1.0
        self.set_output_scales(rotation_scale, translation_scale)
        # the ResNet classification heads are kept for checkpoint compatibility only: never run,
        # never trained (DDP would otherwise complain about parameters without gradients)
        for enc in (self.encoder, self.pose_encoder):
            if enc is not None:
                for p in enc.encoder.fc.parameters():
                    p.requires_grad_(False)

    # -- depth -----------------------------------------------------------------------------------
    def depth_disps(self, images: torch.Tensor) -> dict:
        """All four disparity scales {s: [B,1,H/2^s,W/2^s]} of the depth network."""
        return self.depth(images) if self.packnet else self.depth(self.encoder(images))

    def disp_to_depth(self, disp, min_depth: float, max_depth: float):
        """(scaled disparity, depth) with the depth network's own convention (monodepth2's
        sigmoid mapping, or PackNet-SfM's inverse depth = sigmoid / 0.5, clamped)."""
        if self.packnet:
            return self.depth.disp_to_depth(disp, min_depth, max_depth)
        return md2_disp_to_depth(disp, min_depth, max_depth)

    # -- pose ------------------------------------------------------------------------------------
    def forward(self, target: torch.Tensor, sources: torch.Tensor, offsets,
                lengths: torch.Tensor | None = None, *, source_depth: bool = False,
                return_dict: bool = False, instance_masks: torch.Tensor | None = None,
                source_instance_masks: torch.Tensor | None = None):
        """lengths: optional [B,S] translation lengths (e.g. odometry distances) that replace
        the predicted ones in the returned poses where finite and > 0 (the network then only
        decides direction and rotation there); the returned raw translations are unchanged.
        instance_masks [B,M,H,W] (+ source_instance_masks [B,S,M,H,W], the same slots in each
        source): run ``extras['object_motion']`` (inside forward, so that DDP sees it)."""
        B, S = sources.shape[:2]
        H, W = target.shape[-2:]
        src_disps = None
        if source_depth:      # one batch through the depth network: target, then every source
            allimg = torch.cat([target, sources.transpose(0, 1).reshape(S * B, *target.shape[1:])], 0)
            out = self.depth_disps(allimg)
            src_disps = out[0][B:].view(S, B, 1, H, W).transpose(0, 1)
            out = {s: v[:B] for s, v in out.items()}
        else:
            out = self.depth_disps(target)
        disps = [out[s] for s in self.scales]
        masks = logits = K = None
        if self.posexp:
            po = self.pose(target, sources)
            aa = po['axisangle'].float().transpose(0, 1) * self.rotation_scale      # [S,B,3]
            tr = po['translation'].float().transpose(0, 1) * self.translation_scale
            masks, logits = po.get('masks'), po.get('mask_logits')
            if self.intrinsics is not None:
                K = self.intrinsics(po['bottleneck'], W, H)
        else:
            pairs = []
            for k, off in enumerate(offsets):
                src = sources[:, k]
                pairs.append(torch.cat([src, target], 1) if off < 0 else torch.cat([target, src], 1))
            # all pairs through the pose network in one batch
            feats = self.pose_encoder(torch.cat(pairs, 0))
            aa, tr = self.pose([feats])
            aa = aa[:, 0, 0].float().view(S, B, 3) * self.rotation_scale
            tr = tr[:, 0, 0].float().view(S, B, 3) * self.translation_scale
            if self.intrinsics is not None:
                # one K per pair; the sample's K is their mean (all pairs see the same camera)
                K = self.intrinsics(feats[-1], W, H).view(S, B, 3, 3).mean(0)
        used = tr
        if lengths is not None:
            L = lengths.to(tr).transpose(0, 1).unsqueeze(-1)            # [S,B,1]
            norm = tr.norm(dim=-1, keepdim=True)
            ok = torch.isfinite(L) & (L > 0) & (norm > 1e-9)
            used = torch.where(ok, tr / norm.clamp_min(1e-9) * torch.nan_to_num(L, nan=0.0), tr)
        poses = []
        for k, off in enumerate(offsets):
            # monodepth2: [src, tgt] predicts T_tgt_src -> invert; [tgt, src] predicts T_src_tgt.
            # PoseExpNet: T_src_tgt for every source.
            poses.append(pose_vec_to_mat(aa[k], used[k], invert=(off < 0) and not self.posexp))
        poses = torch.stack(poses, 1)
        trans = tr.transpose(0, 1)
        if not return_dict:
            return disps, poses, trans
        obj_aa = obj_tr = None
        if instance_masks is not None and 'object_motion' in self.extras:
            obj_aa, obj_tr = self.object_motion(target, sources, instance_masks, source_instance_masks)
        # the size prior is read inside forward too (DDP sees its parameter used)
        obj_lh = self.extras['object_size']() if 'object_size' in self.extras else None
        return {'disps': disps, 'poses': poses, 'translations': trans, 'K': K,
                'masks': masks, 'mask_logits': logits, 'source_disps': src_disps,
                'object_axisangle': obj_aa, 'object_translation': obj_tr,
                'object_log_height': obj_lh}

    def object_motion(self, target, sources, masks, source_masks=None):
        """``extras['object_motion']`` on (target, every source) in one batch ->
        (axisangle, translation) [B,S,M,3]; translations x ``translation_scale``."""
        B, S = sources.shape[:2]
        net = self.extras['object_motion']
        tgt = target.unsqueeze(0).expand(S, *target.shape).reshape(S * B, *target.shape[1:])
        src = sources.transpose(0, 1).reshape(S * B, *target.shape[1:])
        m = masks.unsqueeze(0).expand(S, *masks.shape).reshape(S * B, *masks.shape[1:])
        sm = None
        if source_masks is not None:
            sm = source_masks.transpose(0, 1).reshape(S * B, *masks.shape[1:])
        aa, tr = net(tgt, src, m, sm)                                   # [S*B,M,3]
        M = masks.shape[1]
        aa = aa.float().view(S, B, M, 3).transpose(0, 1)
        tr = tr.float().view(S, B, M, 3).transpose(0, 1) * self.translation_scale
        return aa, tr

    def networks(self) -> dict:
        """The networks by checkpoint role (None where the method has none)."""
        nets = {'encoder': self.encoder, 'depth': self.depth, 'pose_encoder': self.pose_encoder,
                'pose': self.pose, 'intrinsics': self.intrinsics}
        nets.update(self.extras.items())
        return nets

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    # -- output reparametrisation ----------------------------------------------------------------
    def _last_pose_conv(self) -> nn.Conv2d:
        return self.pose.pose_pred if self.posexp else self.pose.net[-1]

    def _num_pose_frames(self) -> int:
        return self.pose.num_sources if self.posexp else self.pose.num_frames_to_predict_for

    def _rows(self, part: str):
        n = self._num_pose_frames()
        offs = (0, 1, 2) if part == 'rotation' else (3, 4, 5)
        return [6 * k + r for k in range(n) for r in offs]

    def _row_factors(self) -> torch.Tensor:
        """Per output channel of the last pose convolution: the factor the model applies."""
        f = torch.ones(self._last_pose_conv().out_channels)
        f[self._rows('rotation')] = self.rotation_scale
        f[self._rows('translation')] = self.translation_scale
        return f

    def set_output_scales(self, rotation: float | None = None, translation: float | None = None):
        """Change the reparametrisation of the pose outputs without changing what the model
        predicts (the last convolution's rows are divided by the new factors)."""
        old = self._row_factors()
        old_t = self.translation_scale
        for name, v in (('rotation', rotation), ('translation', translation)):
            if v is None:
                continue
            v = float(v)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f'{name}_scale must be > 0, got {v}')
            setattr(self, f'{name}_scale', v)
        last = self._last_pose_conv()
        ratio = (old / self._row_factors()).to(last.weight)
        with torch.no_grad():
            last.weight.mul_(ratio.view(-1, 1, 1, 1))
            last.bias.mul_(ratio)
            if 'object_motion' in self.extras:      # the same reparametrisation, same function
                _scale_object_translation(self.extras['object_motion'], old_t / self.translation_scale)

    def rescale_translation(self, factor: float):
        """Multiply what the pose network (and an object-motion net in ``extras``) predicts as
        translation by ``factor`` -- a change of length unit, e.g. metres -> units of the
        scene's median depth when a metric checkpoint starts a depth-normalised run."""
        factor = float(factor)
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f'translation factor must be > 0, got {factor}')
        last = self._last_pose_conv()
        rows = torch.tensor(self._rows('translation'), device=last.weight.device)
        with torch.no_grad():
            last.weight[rows] *= factor
            last.bias[rows] *= factor
        if 'object_motion' in self.extras:
            _scale_object_translation(self.extras['object_motion'], factor)

    def set_translation_scale(self, c: float):
        self.set_output_scales(translation=c)

    def pose_state_dict(self) -> dict:
        """The pose network's state dict as the checkpoint stores it (output scales folded in)."""
        sd = {k: v.detach().clone() for k, v in self.pose.state_dict().items()}
        prefix = 'pose_pred' if self.posexp else f'net.{len(self.pose.net) - 1}'
        f = self._row_factors()
        sd[f'{prefix}.weight'] *= f.view(-1, 1, 1, 1).to(sd[f'{prefix}.weight'])
        sd[f'{prefix}.bias'] *= f.to(sd[f'{prefix}.bias'])
        return sd

    # -- checkpoints -----------------------------------------------------------------------------
    def save(self, directory, height: int, width: int, running_intrinsics: dict | None = None):
        """Write the layout :func:`~depth_ego_ros.core.models.build_networks` loads:
        monodepth2's (encoder.pth with height/width, depth.pth, pose_*.pth) for the ResNet
        networks, depth.pth with a ``model`` entry for PackNet, pose.pth with ``model='posexp'``
        for PoseExpNet, intrinsics.pth for the intrinsics head (with ``running_intrinsics`` =
        {'value': (fx/W, fy/H, ox, oy), 'count'} as its running estimate), ``<name>.pth`` per
        extra sub-network."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.packnet:
            ckpt.save_packnet_depth(d, self.depth, model=self.depth_model, height=height, width=width)
        else:
            ckpt.save_monodepth2(d, self.encoder, self.depth, height=height, width=width)
        if self.posexp:
            folded = copy.deepcopy(self.pose).cpu()
            folded.load_state_dict(self.pose_state_dict())
            ckpt.save_posexp(d, folded)
        else:
            _save(self.pose_encoder.state_dict(), d / ckpt.POSE_ENCODER_FILE)
            _save(self.pose_state_dict(), d / ckpt.POSE_FILE)
        if self.intrinsics is not None:
            ckpt.save_intrinsics_head(d, self.intrinsics, running_intrinsics)
        for name, net in self.extras.items():
            if isinstance(net, ObjectMotionNet):
                # one format: save_object_motion's (translation scale folded in)
                folded = copy.deepcopy(net).cpu()
                _scale_object_translation(folded, self.translation_scale)
                save_object_motion(folded, d / f'{name}.pth')
            elif isinstance(net, ObjectSizePrior):
                save_object_size(net, d / f'{name}.pth')
            else:
                _save(net.state_dict(), d / f'{name}.pth')
        return d

    def load_extras(self, directory) -> list:
        """Load every extra sub-network whose ``<name>.pth`` exists in ``directory``; returns
        the names loaded (the others keep their initialisation)."""
        done = []
        for name, net in list(self.extras.items()):
            path = Path(directory) / f'{name}.pth'
            if not path.is_file():
                continue
            if isinstance(net, ObjectMotionNet):
                # its own format (channels, motion_scale): the saved net replaces the fresh one
                loaded = load_object_motion(path).train()
                _scale_object_translation(loaded, 1.0 / self.translation_scale)
                self.extras[name] = loaded.to(next(net.parameters()).device)
            elif isinstance(net, ObjectSizePrior):
                loaded = load_object_size(path)
                if loaded.num_classes != net.num_classes:
                    raise ckpt.CheckpointError(f'{path}: a size prior for {loaded.num_classes} '
                                               f'classes, this run has {net.num_classes}')
                with torch.no_grad():
                    net.log_height.copy_(loaded.log_height.to(net.log_height))
            else:
                ckpt.load_into(net, path)
            done.append(name)
        return done


def _scale_object_translation(net: ObjectMotionNet, factor: float):
    """Multiply the translation outputs (head rows 3..5) of an object-motion net by factor."""
    if factor == 1.0:
        return
    with torch.no_grad():
        net.head.weight[3:6].mul_(factor)
        net.head.bias[3:6].mul_(factor)


def _save(sd: dict, path: Path):
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    torch.save({k: v.detach().cpu() for k, v in sd.items()}, tmp)
    os.replace(tmp, path)


def _packnet_name(net: PackNet01) -> str:
    return ckpt.packnet_model_name(net.width)


def build_model(model: str = 'resnet18', checkpoint: str | os.PathLike | None = None,
                scales=(0, 1, 2, 3), seed: int = 0, pose_model: str = 'monodepth2',
                learned_intrinsics: bool = False, num_sources: int = 2,
                explainability: bool = False, intrinsics_init_focal: float = 1.0
                ) -> tuple[SfMModel, dict]:
    """SfMModel with random (seeded) weights or loaded from a checkpoint directory (any layout
    :func:`~depth_ego_ros.core.models.build_networks` reads; for PackNet also a PackNet-SfM
    ``.ckpt`` file).

    pose_model 'posexp': PoseExpNet(num_sources, output_exp=explainability). A checkpoint
    without pose files, or with the other pose network (``--init`` from e.g. a monodepth2
    model into a PoseExpNet run), gets a fresh pose network (info['pose_from_checkpoint']
    False, a warning). learned_intrinsics: an IntrinsicsHead on the pose network's bottleneck,
    from the checkpoint's intrinsics.pth when it has one, else at the prior
    ``intrinsics_init_focal`` (fx/W = fy/H), centred principal point.
    Returns (model in train mode on the CPU, info) with info['pose_from_checkpoint'],
    info['intrinsics_from_checkpoint'], info['meta'].
    """
    if pose_model not in POSE_MODELS:
        raise ValueError(f"pose_model must be one of {', '.join(POSE_MODELS)}, got {pose_model!r}")
    ck_pose = None
    if checkpoint is not None and Path(checkpoint).is_dir():
        ck_pose = ckpt.read_checkpoint_meta(checkpoint).get('pose_model')
    with_pose = checkpoint is None or ck_pose == pose_model
    depth_net, pose_net, meta = build_networks(model, checkpoint, with_pose=with_pose, seed=seed,
                                               pose_model=pose_model)
    info = {'meta': meta, 'pose_from_checkpoint': pose_net is not None and checkpoint is not None,
            'intrinsics_from_checkpoint': False}
    if checkpoint is not None and pose_net is None:
        log.warning('checkpoint %s has no %s pose network: the pose network starts from random '
                    'weights', checkpoint, pose_model)
    if pose_model == 'posexp':
        if pose_net is not None and checkpoint is not None:
            net = pose_net.net
            if net.num_sources != num_sources or net.output_exp != explainability:
                raise ckpt.CheckpointError(
                    f'{checkpoint}: its PoseExpNet has num_sources={net.num_sources}, '
                    f'output_exp={net.output_exp}; this run needs num_sources={num_sources} '
                    f'(one per frame offset), output_exp={explainability} (explainability_weight '
                    f'{">" if explainability else "="} 0)')
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                net = PoseExpNet(num_sources=num_sources, output_exp=explainability)
        pose_enc, pose_dec = None, net
    else:
        if pose_net is None:
            _, pose_net, _ = build_networks(model, None, with_pose=True, seed=seed + 1)
        pose_enc, pose_dec = pose_net.encoder, pose_net.decoder
    head = None
    if learned_intrinsics:
        channels = POSE_BOTTLENECK_CHANNELS['posexp'] if pose_model == 'posexp' \
            else int(pose_enc.num_ch_enc[-1])
        head = IntrinsicsHead(channels, init_focal=intrinsics_init_focal)
        ipath = Path(checkpoint) / ckpt.INTRINSICS_FILE if checkpoint is not None else None
        if ipath is not None and ipath.is_file() and info['pose_from_checkpoint']:
            ckpt.load_intrinsics_head(head, ipath)
            info['intrinsics_from_checkpoint'] = True
    if model in PACKNET_WIDTHS:
        m = SfMModel(None, depth_net.net, pose_enc, pose_dec, scales, intrinsics=head, depth_model=model)
    else:
        m = SfMModel(depth_net.encoder, depth_net.decoder, pose_enc, pose_dec, scales,
                     intrinsics=head, depth_model=model)
    return m.train(), info


def disparity_for_depth(depth: float, min_depth: float, max_depth: float) -> float:
    """The sigmoid output for which monodepth2's disp_to_depth gives ``depth``."""
    lo, hi = 1.0 / max_depth, 1.0 / min_depth
    return (1.0 / depth - lo) / (hi - lo)


def init_depth_output(model: SfMModel, depth: float, min_depth: float, max_depth: float) -> float:
    """Make the depth network start near ``depth`` (metres) everywhere: the bias of every
    disparity convolution is set to the logit of the matching sigmoid output and its weights are
    scaled down (x0.1) so the start is nearly flat. monodepth2: sigmoid = the disparity of
    ``depth`` in [1/max_depth, 1/min_depth]; PackNet01: sigmoid = net.min_depth / depth (its
    inverse depth is sigmoid / net.min_depth; needs depth > net.min_depth). Returns the bias."""
    if model.packnet:
        net = model.depth
        d = net.min_depth / float(depth)
        if not 0 < d < 1:
            raise ValueError(f'PackNet01 cannot start at {depth} m: its depth is >= {net.min_depth}')
        convs = [getattr(net, f'disp{k}_layer').conv1 for k in (1, 2, 3, 4)]
    else:
        d = disparity_for_depth(depth, min_depth, max_depth)
        dec = model.depth
        convs = [dec.decoder[idx].conv for idx in dec._dispconv_index.values()]
    logit = math.log(d / (1.0 - d))
    with torch.no_grad():
        for conv in convs:
            conv.bias.fill_(logit)
            conv.weight.mul_(0.1)
    return logit


def init_pose_forward(model: SfMModel, step: float, offsets=None) -> None:
    """Make the pose network start predicting a forward step of ``step`` (depth units) along
    the optical axis with no rotation, for every predicted frame. monodepth2: for a pair [a, b]
    in temporal order the network predicts T_b_a, i.e. translation (0, 0, -step) for a camera
    moving forward. PoseExpNet predicts T_src_tgt: (0, 0, +step x |offset|) for a source before
    the target, (0, 0, -step x offset) after it (``offsets`` needed). The last convolution's bias
    carries it (outputs are multiplied by 0.01); its weights are scaled down (x0.1)."""
    last = model._last_pose_conv()
    n = model._num_pose_frames()
    if model.posexp:
        if offsets is None or len(offsets) != n:
            raise ValueError(f'PoseExpNet: give the {n} frame offsets')
        targets = [float(step) * abs(o) * (1.0 if o < 0 else -1.0) for o in offsets]
        out_scale = POSEXP_SCALE
    else:
        targets = [-float(step)] * n
        out_scale = POSE_OUTPUT_SCALE
    with torch.no_grad():
        last.weight.mul_(0.1)
        last.bias.zero_()
        for k in range(n):
            last.bias[6 * k + 5] = targets[k] / out_scale / model.translation_scale
