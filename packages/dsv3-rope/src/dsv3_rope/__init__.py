"""dsv3-rope."""
