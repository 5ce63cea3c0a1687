"""Training: the trainer loop, optimisers and schedules, metrics, checkpoints."""
