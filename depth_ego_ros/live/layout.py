"""The Foxglove / Lichtblick layout of the live view: camera and coloured depth side by side
above a 3-D panel with the point cloud, the trajectory (path) and the odometry in the odom
frame. The classic exported-layout JSON (``configById`` + mosaic ``layout``) that both apps
import (Layouts -> Import from file).

config/foxglove_layout.json is ``layout()`` for the default topic names (the tests keep them
equal); ``depth-ego view --write-layout FILE`` writes one for the topic names of a namespaced or
remapped view.
"""
from __future__ import annotations

import json

DEFAULT_TOPICS = {'camera': '/image', 'colored': '/depth/colored', 'depth': '/depth',
                  'points': '/points', 'odom': '/odom', 'path': '/path'}


def layout(topics: dict | None = None, fixed_frame: str = 'odom') -> dict:
    """The layout for the view's channel names ``topics`` (keys as DEFAULT_TOPICS)."""
    t = dict(DEFAULT_TOPICS, **(topics or {}))
    return {
        'configById': {
            'Image!camera': {'imageMode': {'imageTopic': t['camera']}},
            'Image!depth': {'imageMode': {'imageTopic': t['colored']}},
            '3D!scene': {
                'followTf': fixed_frame,
                'followMode': 'follow-none',
                'scene': {'transforms': {'showLabel': False, 'axisScale': 0.5}},
                'cameraState': {'distance': 12.0, 'perspective': True, 'phi': 50.0,
                                'thetaOffset': 0.0, 'targetOffset': [0.0, 0.0, 0.0],
                                'target': [0.0, 0.0, 0.0], 'fovy': 45.0, 'near': 0.01,
                                'far': 5000.0},
                'topics': {
                    t['points']: {'visible': True, 'pointSize': 3, 'colorField': 'rgb',
                                  'colorMode': 'rgb', 'decayTime': 0},
                    t['path']: {'visible': True, 'lineWidth': 0.05, 'gradient': ['#ff8800ff',
                                                                                  '#ff8800ff']},
                    t['odom']: {'visible': True, 'type': 'arrow', 'arrowScale': [0.5, 0.1, 0.1]},
                },
                'layers': {'grid': {'visible': True, 'layerId': 'foxglove.Grid',
                                    'frameId': fixed_frame, 'size': 20, 'divisions': 20}},
            },
        },
        'globalVariables': {},
        'userNodes': {},
        'playbackConfig': {'speed': 1},
        'layout': {
            'direction': 'column',
            'first': {'direction': 'row', 'first': 'Image!camera', 'second': 'Image!depth',
                      'splitPercentage': 50},
            'second': '3D!scene',
            'splitPercentage': 40,
        },
    }


def layout_json(topics: dict | None = None, fixed_frame: str = 'odom') -> str:
    return json.dumps(layout(topics, fixed_frame), indent=2) + '\n'


__all__ = ['DEFAULT_TOPICS', 'layout', 'layout_json']
