"""Training: one loop (DDP/FSDP2) for the three stages, each a `Stage` with its loss and evaluation."""
