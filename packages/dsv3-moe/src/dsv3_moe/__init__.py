"""dsv3-moe."""
