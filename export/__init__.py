"""ONNX export and verification (`genie-robot export`, `genie-robot export-verify`).

Installed as the `genie_robot_export` package (setup.py maps it to this directory); it needs
torch, unlike the runtime it feeds (genie_robot.runtime).
"""
