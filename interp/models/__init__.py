"""Model wrappers: one hooked interface over TransformerLens, nnsight and the native torch implementation."""
