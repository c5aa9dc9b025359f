"""Layer-wise gradients of instruction/response pairs (Li, Li & Zhou 2025), the method: data encoding (`data`),
per-sample projection gradients (`per_sample`, `generic` for families without a native spec), their statistics
(`stats`) and the resumable sweep (`run`). The analysis (`interp gradients`) is `interp.analyses.gradients`."""
