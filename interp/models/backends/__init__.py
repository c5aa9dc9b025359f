"""Backends behind `HookedModel`: transformer_lens (TransformerBridge), nnsight, native (pure torch)."""
