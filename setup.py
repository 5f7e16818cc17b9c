"""ament_python package: `colcon build` in a ROS 2 workspace and `pip install -e .` both use this."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'depth_ego_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'bench.*']),
    package_data={PACKAGE + '.zoo': ['registry.json']},   # the model zoo's registry (data)
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.xml')
         + glob('config/*.json')),
        ('share/' + PACKAGE + '/rviz', glob('rviz/*.rviz')),
    ],
    # ROS packages (rclpy, message packages) come from the distro or from the PyPI ROS wheels
    # (extra `ros-wheels`); torch from the distro/pip (extra `torch`). Only pure-Python
    # dependencies every install needs are listed here.
    install_requires=['setuptools', 'numpy', 'pyyaml', 'transforms3d', 'rosbags', 'pillow'],
    extras_require={
        'torch': ['torch', 'torchvision', 'onnxruntime', 'onnx'],
        'ros-wheels': [
            'ros-rclpy[fastrtps]', 'ros-sensor-msgs', 'ros-geometry-msgs', 'ros-nav-msgs',
            'ros-std-msgs', 'ros-std-srvs', 'ros-diagnostic-msgs', 'ros-builtin-interfaces',
        ],
        'view': ['foxglove-sdk'],
        'test': ['websockets', 'pytest', 'pytest-timeout', 'mcap', 'mcap-ros2-support', 'matplotlib', 'tqdm'],
    },
    zip_safe=True,
    maintainer='depth_ego_ros maintainers',
    maintainer_email='depth-ego-ros@example.com',
    description='Self-supervised monocular depth and ego-motion for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'depth_ego_node = depth_ego_ros.ros.perception_node:main',
            'recorder_node = depth_ego_ros.ros.recorder_node:main',
            'depth_ego_view = depth_ego_ros.ros.live_view:main',
            'depth_ego_lifecycle_node = depth_ego_ros.ros.perception_lifecycle:main',
            'depth-ego = depth_ego_ros.cli.main:main',
        ],
    },
)
