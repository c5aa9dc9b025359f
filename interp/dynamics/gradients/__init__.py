"""Layer-wise gradients of instruction/response pairs (Li, Li & Zhou 2025): data, per-sample gradients, statistics,
the resumable run and its report."""
