"""The method names every layer selects by (node parameters, EstimatorConfig, TrainConfig, the
command line), in one torch-free module so that parsers and parameter tables can list them
without importing the networks."""

__all__ = ['PACKNET_WIDTHS', 'MODELS', 'POSE_MODELS']

#: PackNet01 depth networks and their channel width
PACKNET_WIDTHS = {'packnet01': 1.0, 'packnet01-w0.5': 0.5, 'packnet01-w0.25': 0.25}
#: depth networks (the ResNet models also name the pose encoder)
MODELS = ('resnet18', 'resnet50') + tuple(PACKNET_WIDTHS)
#: pose networks: monodepth2's ResNet-18 pose net, SfMLearner's PoseExpNet
POSE_MODELS = ('monodepth2', 'posexp')
