"""``depth-ego train --weights-init imagenet``: ResNet encoders from torchvision's ImageNet weights.

A from-scratch run starts its ResNet encoders (the depth encoder of resnet18/resnet50, and the
monodepth2 pose encoder, ResNet-18 for PackNet depth) from the ImageNet weights the model zoo
caches (`depth-ego weights fetch resnet18_imagenet` / `resnet50_imagenet`), as monodepth2
does; the pose encoder's first convolution gets the RGB kernels repeated over its stacked frames
and divided by their number. Decoders, PackNet01 and PoseExpNet keep their initialisation.
"""
from __future__ import annotations

from ..core.networks.resnet_encoder import ResnetEncoder, parse_num_layers

__all__ = ['WEIGHTS_INITS', 'weights_init_problems', 'apply_weights_init', 'imagenet_layers',
           'check_weights_cached']

WEIGHTS_INITS = ('none', 'imagenet')


def imagenet_layers(model: str, pose_model: str) -> list[int]:
    """ResNet depths (18/50) a run's encoders need ImageNet weights for."""
    layers = []
    if not str(model).startswith('packnet01'):
        layers.append(parse_num_layers(model))
    if pose_model == 'monodepth2':
        layers.append(18 if str(model).startswith('packnet01') else parse_num_layers(model))
    return sorted(set(layers))


def weights_init_problems(cfg) -> list[str]:
    """Configuration errors of ``cfg.weights_init`` (TrainConfig.validate adds them)."""
    w = cfg.weights_init
    if w not in WEIGHTS_INITS:
        return [f"weights_init must be one of {', '.join(WEIGHTS_INITS)}, got {w!r}"]
    if w == 'none':
        return []
    if cfg.init is not None:
        return ['weights_init imagenet applies to training from scratch; init already gives '
                'the weights (drop one of them)']
    if not imagenet_layers(cfg.model, cfg.pose_model):
        return [f'weights_init imagenet: {cfg.model} with pose model {cfg.pose_model} has no '
                'ResNet encoder to initialise']
    return []     # whether the weights are cached is checked when they are used (not on resume)


def check_weights_cached(how: str, model: str, pose_model: str):
    """ZooError naming the fetch command when the weights ``how`` needs are not cached."""
    if how != 'imagenet':
        return
    from ..zoo import ZooError, installed_path
    from ..zoo.imagenet import imagenet_name
    missing = [imagenet_name(n) for n in imagenet_layers(model, pose_model)
               if installed_path(imagenet_name(n)) is None]
    if missing:
        raise ZooError(f'weights_init imagenet needs {", ".join(missing)}, not downloaded yet: '
                       f'run `depth-ego weights fetch {" ".join(missing)}` first')


def apply_weights_init(model, how: str) -> str:
    """Initialise ``model``'s (SfMModel) ResNet encoders as ``how`` says; -> a note for the log."""
    if how != 'imagenet':
        return ''
    check_weights_cached(how, model.depth_model, model.pose_model)
    from ..zoo.imagenet import imagenet_name, imagenet_state_dict, init_encoder_from_imagenet
    done, cache = [], {}
    for label, enc in (('depth encoder', model.encoder), ('pose encoder', model.pose_encoder)):
        if not isinstance(enc, ResnetEncoder):
            continue
        n = enc.num_layers
        if n not in cache:
            cache[n] = imagenet_state_dict(n)
        init_encoder_from_imagenet(enc, cache[n])
        done.append(f'{label} ({imagenet_name(n)}'
                    f'{f", conv1 over {enc.num_input_images} frames" if enc.num_input_images > 1 else ""})')
    return 'ImageNet initialisation: ' + ', '.join(done) if done else ''
