"""dsv3-model."""
