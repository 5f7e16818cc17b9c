"""Optional ROS / imaging libraries, imported once.

A ROS 2 distro ships cv_bridge, sensor_msgs_py, tf2_ros and tf2_msgs; the PyPI-wheel environment
may lack some of them. Each name below is the module when importable, else ``None``; code uses the
library when present and the project's own implementation otherwise (with the same behaviour).
Nothing here raises at import time.
"""
from __future__ import annotations

import importlib


def optional_import(name: str):
    """Import ``name`` and return the module, or ``None`` when it (or a dependency) is missing."""
    try:
        return importlib.import_module(name)
    except Exception:  # ImportError, or a broken binary extension (OSError, AttributeError...)
        return None


cv2 = optional_import('cv2')
cv_bridge = optional_import('cv_bridge') if cv2 is not None else None
point_cloud2 = optional_import('sensor_msgs_py.point_cloud2')
tf2_ros = optional_import('tf2_ros')
_tf2_msgs = optional_import('tf2_msgs.msg')
TFMessage = getattr(_tf2_msgs, 'TFMessage', None)


def describe() -> dict:
    """Which optional back-ends are active (for logs and diagnostics)."""
    return {
        'cv_bridge': cv_bridge is not None,
        'cv2': cv2 is not None,
        'sensor_msgs_py': point_cloud2 is not None,
        'tf2_ros': tf2_ros is not None,
        'tf2_msgs': TFMessage is not None,
    }
