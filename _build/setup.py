# Run by _build/backend.py in place of a top-level setup.py; all metadata is
# in pyproject.toml.  Only what pyproject.toml cannot express lives here.
import os
import sys

from setuptools import Extension, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_ring import SPEEDUPS  # noqa: E402

setup(cffi_modules=["_build/build_ring.py:ffibuilder"], ext_modules=[SPEEDUPS])
