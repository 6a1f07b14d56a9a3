#!/usr/bin/env bash
# Builds genie_robot_interfaces (rosidl: C, C++ and Python type support) into a venv that is
# a ROS prefix (ROS 2 from PyPI wheels). Usage: scripts/build_interfaces.sh <venv>
#
# The ROS wheels' CMake export files hard-code the wheel builder's Python and numpy include
# paths (/opt/python/cp311-cp311/...); they are rewritten to this interpreter's first, or
# CMake stops with "non-existent path" (../shared/ENVIRONMENT.md).
set -euo pipefail
venv=$(realpath "$1")
py="$venv/bin/python"
src=$(dirname "$(realpath "$0")")/../genie_robot_interfaces
py_inc=$("$py" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_inc=$("$py" -c "import numpy; print(numpy.get_include())")
if [ ! -f "$py_inc/Python.h" ]; then
	echo "build_interfaces: $py_inc/Python.h is missing: install the Python headers (apt: python3.11-dev)" >&2
	exit 1
fi
# (grep finds nothing once they are rewritten: a repeated setup must not stop there under pipefail)
{ grep -l "/opt/python/cp311-cp311" "$venv"/share/*/cmake/*Export.cmake 2>/dev/null || true; } | xargs -r sed -i \
	-e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
	-e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF \
	-DCMAKE_BUILD_TYPE=Release > "$build.log" 2>&1 || { cat "$build.log" >&2; exit 1; }
cmake --build "$build" -j2 >> "$build.log" 2>&1 || { tail -50 "$build.log" >&2; exit 1; }
cmake --install "$build" >> "$build.log" 2>&1 || { tail -50 "$build.log" >&2; exit 1; }
rm -f "$build.log"
echo "build_interfaces: genie_robot_interfaces installed into $venv"
