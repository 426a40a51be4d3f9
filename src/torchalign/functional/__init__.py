"""Pure tensor operations (no modules, no state)."""
