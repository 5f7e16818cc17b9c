"""Declarative ROS parameters: a node lists ``Param`` rows; this module declares them with
descriptions, ranges and choices, reads them back as a plain dict and validates runtime changes.

Ranges are declared through ``FloatingPointRange`` / ``IntegerRange`` (rclpy then refuses values
outside them, at start-up from a params file too); string choices are listed in the descriptor's
``additional_constraints`` and checked here. ``read_only`` parameters are start-up only: with
``enforce_read_only`` rclpy refuses changes itself; otherwise the node's ``refuse`` hook of
:func:`on_set_validator` decides (and says why), e.g. a lifecycle node takes them while
unconfigured and refuses them once its networks are loaded. Either way no change is accepted
and then ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.parameter import Parameter


@dataclass(frozen=True)
class Param:
    """One parameter: name (dots for groups), default value (its type is the parameter's type),
    description, optional ``choices`` (strings), ``range`` (lo, hi[, step]) for numbers, ``length`` for
    arrays, ``read_only`` (start-up only). A default of ``[]`` declares a string array whose unset
    (or ``[]``) value reads back as ``[]``."""
    name: str
    default: Any
    description: str
    choices: tuple | None = None
    range: tuple | None = None
    length: int | None = None
    read_only: bool = False
    pattern_ok: Callable[[Any], bool] | None = None  # extra check for free-form values
    pattern_help: str = ''

    def descriptor(self, enforce_read_only: bool = True) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description,
                                read_only=self.read_only and enforce_read_only)
        d.type = (Parameter.Type.STRING_ARRAY.value if self.default == []
                  else Parameter.Type.from_parameter_value(self.default).value)
        notes = []
        if self.choices:
            notes.append('one of: ' + ', '.join(str(c) for c in self.choices))
        if self.length is not None:
            notes.append(f'exactly {self.length} values')
        if self.pattern_help:
            notes.append(self.pattern_help)
        if self.read_only:
            notes.append('start-up only: run-time changes are refused')
        d.additional_constraints = '; '.join(notes)
        if self.range is not None:
            lo, hi = self.range[:2]
            step = self.range[2] if len(self.range) > 2 else 0
            if isinstance(self.default, bool):
                pass
            elif isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=int(step))]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                             to_value=float(hi), step=float(step))]
        return d

    def check(self, value) -> str | None:
        """None when ``value`` is acceptable, else a sentence saying why not."""
        if self.choices and value not in self.choices:
            if not (self.pattern_ok and self.pattern_ok(value)):
                return (f'{self.name}={value!r} is not one of {", ".join(map(str, self.choices))}'
                        + (f' ({self.pattern_help})' if self.pattern_help else ''))
        if self.length is not None and len(value) != self.length:
            return f'{self.name} needs exactly {self.length} values, got {len(value)}'
        if self.range is not None and not isinstance(value, (list, tuple)):
            lo, hi = self.range[:2]
            step = self.range[2] if len(self.range) > 2 else 0
            if not lo <= value <= hi:
                return f'{self.name}={value} is outside [{lo}, {hi}]'
            if step and (value - lo) % step:
                return f'{self.name}={value} must be {lo} + a multiple of {step}'
        return None


def declare(node, specs: Iterable[Param], enforce_read_only: bool = True) -> dict:
    """Declare every parameter on ``node`` and return {name: value}. Raises ValueError listing all
    values (from overrides / a params file) that fail their checks. ``enforce_read_only=False``:
    start-up-only parameters are declared writable (the set callback refuses them instead)."""
    values, errors = {}, []
    for spec in specs:
        if spec.default == []:      # an empty list has no ROS type: string array, unset = []
            value = node.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY,
                                           spec.descriptor(enforce_read_only)).value
            value = [] if value is None else value
        else:
            value = node.declare_parameter(spec.name, spec.default,
                                           spec.descriptor(enforce_read_only)).value
        if isinstance(spec.default, float) and isinstance(value, int):
            value = float(value)
        if isinstance(spec.default, list) and value is not None:
            value = list(value)
        problem = spec.check(value)
        if problem:
            errors.append(problem)
        values[spec.name] = value
    if errors:
        raise ValueError('invalid parameters: ' + '; '.join(errors))
    return values


def on_set_validator(specs: Sequence[Param], apply: Callable[[dict], None] | None = None,
                     refuse: Callable[[Param, Any], str | None] | None = None):
    """A callback for ``node.add_on_set_parameters_callback`` that refuses values failing their
    checks, or that ``refuse(spec, value)`` refuses (it returns the reason, else None), and passes
    the accepted changes ({name: value}) to ``apply``. One refused parameter refuses the whole
    set (nothing of it is applied)."""
    by_name = {s.name: s for s in specs}

    def callback(params):
        changes = {}
        for p in params:
            spec = by_name.get(p.name)
            if spec is None:
                continue
            problem = spec.check(p.value) or (refuse(spec, p.value) if refuse else None)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            changes[p.name] = p.value
        if apply is not None and changes:
            apply(changes)
        return SetParametersResult(successful=True)

    return callback
