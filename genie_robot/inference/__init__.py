"""Inference: the torch `WorldModel` engine and the numpy MaskGIT sampler both engines share."""
