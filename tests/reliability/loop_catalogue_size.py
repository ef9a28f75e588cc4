"""Size of tests/loop/test_bad_args.py's catalogue, for the combined count."""

import importlib.util
import os

_path = os.path.join(os.path.dirname(__file__), "..", "loop", "test_bad_args.py")
_spec = importlib.util.spec_from_file_location("_bad_args_catalogue", _path)
assert _spec is not None and _spec.loader is not None
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
OLD_CASES = len(_mod.OPEN_CASES) + len(_mod.CLOSED_CASES)
