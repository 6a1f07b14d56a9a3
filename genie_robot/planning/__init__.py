"""Planning in latent action space with a world model (any engine with `imagine` and `encode`)."""
