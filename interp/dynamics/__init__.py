"""Training dynamics: induction-head scores and formation, clamped training, layer-wise gradients."""
