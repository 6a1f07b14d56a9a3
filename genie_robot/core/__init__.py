"""The torch-free engine core both engines build on: the Engine interface, errors and limits,
MaskGIT sampling, the rollout loop, and fitting camera images to the model.
"""
