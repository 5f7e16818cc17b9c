#!/usr/bin/env bash
# One idempotent command that makes the project's environment in .venv:
#
#   * without a ROS 2 distro (the default): ROS 2 Kilted rclpy + Fast DDS + message packages from
#     the PyPI ROS wheels, torch/torchvision, onnxruntime, rosbags, ... and the interface packages
#     no registry has (tf2_msgs) built from interfaces/ with the wheels' rosidl generators;
#   * inside a sourced ROS 2 distro (ROS_DISTRO set and rclpy importable): a venv that sees the
#     distro's packages (--system-site-packages) plus the ML dependencies; nothing ROS is installed.
#
# Re-running it when everything is in place takes a second or two (a stamp records what was
# installed; a changed requirements file, setup.py or interface definition triggers the update).
#
# Environment: VENV (default <repo>/.venv), PYTHON (default python3), DEPTH_EGO_FORCE=1 to redo.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.depth_ego_env_stamp"
log() { printf '[setup_env] %s\n' "$*" >&2; }

distro_mode=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c 'import rclpy' 2>/dev/null; then
  distro_mode=1
fi

# Torch wheels that exist for this machine (x86_64: CUDA build, runs on CPU too).
case "$(uname -m)" in
  aarch64|arm64) TORCH_PINS="torch==2.9.1 torchvision==0.24.1" ;;
  *)             TORCH_PINS="torch==2.14.1 torchvision==0.29.1" ;;
esac

want_stamp() {
  {
    echo "mode=$distro_mode torch=$TORCH_PINS python=$("$PYTHON" -c 'import sys; print(sys.version)')"
    cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/setup.cfg"
    find "$ROOT/interfaces" -type f \( -name '*.msg' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) \
      -print0 | sort -z | xargs -0 cat
  } | sha256sum | cut -d' ' -f1
}
WANT="$(want_stamp)"

quick_check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import rclpy, torch, torchvision, onnxruntime, rosbags, transforms3d  # noqa: F401
from tf2_msgs.msg import TFMessage  # noqa: F401
from sensor_msgs.msg import Image  # noqa: F401
import depth_ego_ros  # noqa: F401
PY
}

if [ "${DEPTH_EGO_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && quick_check; then
  log "environment up to date: $VENV"
  exit 0
fi

t0=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  if [ "$distro_mode" = 1 ]; then
    log "ROS 2 $ROS_DISTRO found: creating $VENV with the distro's packages visible"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

"${PIP[@]}" --upgrade pip setuptools wheel
log "installing torch ($TORCH_PINS) and Python dependencies"
# shellcheck disable=SC2086
"${PIP[@]}" $TORCH_PINS -r "$ROOT/requirements/python.txt"

if [ "$distro_mode" = 0 ]; then
  log "installing ROS 2 wheels (rclpy + Fast DDS + messages)"
  "${PIP[@]}" -r "$ROOT/requirements/ros-wheels.txt"
  "$VENV/bin/python" "$ROOT/scripts/build_interfaces.py" --venv "$VENV"
fi

log "installing depth_ego_ros (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

quick_check || { log "ERROR: the environment does not import after installation"; exit 1; }
echo "$WANT" > "$STAMP"
log "environment ready in $(( $(date +%s) - t0 )) s: $VENV"
