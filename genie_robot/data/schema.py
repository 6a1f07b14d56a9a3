"""The names and shapes every layer agrees on about an RT-1 step, importable without TensorFlow.

The full feature spec (`rt1_spec`) imports TensorFlow Datasets; a robot running the onnxruntime
engine and the adapter needs only these.
"""

IMAGE_SHAPE = (256, 320, 3)  # RT-1's head camera: height, width, RGB
# The robot actions the latent-to-robot adapter predicts, in its output order (3 + 3 + 1 values).
ACTION_KEYS = ("world_vector", "rotation_delta", "gripper_closedness_action")
