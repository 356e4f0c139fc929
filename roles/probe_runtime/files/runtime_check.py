# Run as `python -c` by library/probe_runtime_check.py (tasks/check.yml reads it); argv: the modules to import.
# Imports each one for real (a package whose import breaks is as bad as one that is missing) and prints,
# as its last line, a marker and a JSON object: the interpreter and, per module, its version or the error.
# A name given as `?name` is only located (found on the path, its distribution's version read), not imported:
# vLLM's import costs many seconds on a GPU node, and the server start that follows is the real test of it.
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import sys
import time


def locate(name):
    if importlib.util.find_spec(name) is None:
        return {"version": None, "error": f"ModuleNotFoundError: No module named '{name}'", "located_only": True}
    version = None
    for dist in importlib.metadata.packages_distributions().get(name, []):
        try:
            version = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"version": version, "error": None, "located_only": True}


modules = {}
for arg in sys.argv[1:]:
    name = arg.lstrip("?")
    started = time.perf_counter()
    if arg.startswith("?"):
        modules[name] = locate(name)
    else:
        try:
            module = importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - any failure to import is the answer we report
            modules[name] = {"version": None, "error": f"{type(exc).__name__}: {exc}"[:500]}
        else:
            modules[name] = {"version": getattr(module, "__version__", None), "error": None}
    modules[name]["import_s"] = round(time.perf_counter() - started, 2)
print("PREFLIGHT_RUNTIME_CHECK " + json.dumps(
    {"python": platform.python_version(), "executable": sys.executable, "modules": modules}))
