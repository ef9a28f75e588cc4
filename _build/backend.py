"""In-tree PEP 517 backend: setuptools, with the setup script kept in _build/.

The project's top level is fixed (no setup.py there), but cffi's setuptools
integration is configured through ``setup(cffi_modules=...)``.  This backend
is setuptools' own, told to run ``_build/setup.py`` instead of ``setup.py``.
It relies on ``setuptools.build_meta._BuildMetaBackend.run_setup`` (stable
since setuptools 40.8); a test builds the package so a change there is seen.
"""

from __future__ import annotations

import os

from setuptools import build_meta as _meta

_SETUP = os.path.join("_build", "setup.py")


class _Backend(_meta._BuildMetaBackend):  # type: ignore[misc,name-defined]
    def run_setup(self, setup_script: str = "setup.py") -> None:
        super().run_setup(_SETUP)


_backend = _Backend()

get_requires_for_build_wheel = _backend.get_requires_for_build_wheel
get_requires_for_build_sdist = _backend.get_requires_for_build_sdist
prepare_metadata_for_build_wheel = _backend.prepare_metadata_for_build_wheel
build_wheel = _backend.build_wheel
build_sdist = _backend.build_sdist
get_requires_for_build_editable = _backend.get_requires_for_build_editable
prepare_metadata_for_build_editable = _backend.prepare_metadata_for_build_editable
build_editable = _backend.build_editable
