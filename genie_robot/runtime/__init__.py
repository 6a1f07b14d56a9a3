"""The torch-free runtime: exported ONNX graphs on onnxruntime, with the torch engine's API.

`import genie_robot.runtime` needs numpy and onnxruntime only (tested in a venv without torch).
"""

from genie_robot.runtime.engine import DEFAULT_PROVIDERS, OnnxWorldModel
from genie_robot.runtime.manifest import FORMAT, FORMAT_VERSION, ManifestError, read_manifest

__all__ = ["DEFAULT_PROVIDERS", "FORMAT", "FORMAT_VERSION", "ManifestError", "OnnxWorldModel", "read_manifest"]
