"""dsv3-mla."""
