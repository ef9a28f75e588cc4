"""Conformance: CPython's own test.test_asyncio suites run against uringloop."""
