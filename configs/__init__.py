"""Training configs (ml_collections); see docs/TRAINING.md."""
