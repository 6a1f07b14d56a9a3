"""Inference with torch: the `WorldModel` engine (a run directory or a reference by name), imagining from
any image, and fitting the latent-to-robot adapter. The sampler and rollout loop it shares with the
onnxruntime engine are in `genie_robot.core`.
"""
