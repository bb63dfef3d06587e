"""The routing core (laser.routing) loads no framework, and its rules hold on a hand-made batch."""

import subprocess
import sys


def test_routing_core_imports_no_framework():
    """A fresh interpreter imports laser.routing (and every module in it); none of torch,
    transformers, accelerate, trl or ray is loaded."""
    code = ("import sys, pkgutil, importlib, laser.routing as r\n"
            "for m in pkgutil.walk_packages(r.__path__, 'laser.routing.'): importlib.import_module(m.name)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate', 'trl', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
