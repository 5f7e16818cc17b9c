"""`depth-ego demo` as a library: the configuration, the stages (each callable on its own with a
:class:`DemoConfig`), the figures, the summary table and the whole run. The CLI
(:mod:`depth_ego_ros.cli.demo`) only parses options into a DemoConfig and calls :func:`run_demo`.

=====================  ===========================================================================
:mod:`.config`         DemoConfig, the quick preset, the topics
:mod:`.processes`      child processes (nodes, player) with logs, their ROS environment, the log
:mod:`.stages`         synth, live (node + recorder over DDS), train, evaluate (+ the summary)
:mod:`.figures`        depth before/after, trajectories before/after
:mod:`.report`         the table, improvement ratios, verdict, the printed summary
:mod:`.run`            run_demo: the stages in order, the report
=====================  ===========================================================================
"""
from .config import DemoConfig
from .processes import StageError
from .report import table
from .run import run_demo

__all__ = ['DemoConfig', 'StageError', 'run_demo', 'table']
