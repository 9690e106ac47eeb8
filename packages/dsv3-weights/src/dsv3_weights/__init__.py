"""dsv3-weights."""
