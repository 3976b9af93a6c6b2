"""Files: atomic writes, model checkpoints, paths.

- `atomic`: write to a temporary file, then rename (never half-written).
- `checkpoint`: save and load a `PackNetModel` with its digest.
- `paths`: reading paths relative to a config's folder.

Layer 4: may import `core`, `layers`, `compat` and `errors`.
"""
