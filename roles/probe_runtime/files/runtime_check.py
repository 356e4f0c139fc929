# Run as `python -c` by library/probe_runtime_check.py (tasks/check.yml reads it); argv: the modules to import.
# Imports each one for real (a package whose import breaks is as bad as one that is missing) and prints,
# as its last line, a marker and a JSON object: the interpreter and, per module, its version or the error.
import importlib
import json
import platform
import sys
import time

modules = {}
for name in sys.argv[1:]:
    started = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - any failure to import is the answer we report
        modules[name] = {"version": None, "error": f"{type(exc).__name__}: {exc}"[:500]}
    else:
        modules[name] = {"version": getattr(module, "__version__", None), "error": None}
    modules[name]["import_s"] = round(time.perf_counter() - started, 2)
print("PREFLIGHT_RUNTIME_CHECK " + json.dumps(
    {"python": platform.python_version(), "executable": sys.executable, "modules": modules}))
