"""Side-by-side benchmarks: uringloop vs stock asyncio vs uvloop (and a C limit).

Run ``python -m benchmarks`` from the project root; see docs/benchmarks.md.
"""
