# Run by _build/backend.py in place of a top-level setup.py; all metadata is
# in pyproject.toml.  Only what pyproject.toml cannot express lives here.
from setuptools import setup

setup(cffi_modules=["_build/build_ring.py:ffibuilder"])
