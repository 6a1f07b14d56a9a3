"""genie-robot: an open Genie world model for robots (tokenizer, latent actions, dynamics)."""

import os

# TensorFlow (used only inside genie_robot.data) is chatty at import; keep its C++ logs to errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
