"""Training: the LightningModules (GRPO, SFT), their strategy adapter, exact resume and checkpoints."""
