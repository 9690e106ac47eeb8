"""Shared test support for the dsv3 suites: the one home for reference builders, so no package copies its own."""
