"""Stub torchvision for running ComfyUI's SD paths on this CPU machine (no matching torchvision build)."""
import sys, types
__version__ = "0.0.0-stub"
def _missing(name):
    class _M:
        def __init__(self, *a, **k):
            raise RuntimeError(f"torchvision stub: {name} is not available")
    return _M
class _Mod(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing(f"{self.__name__}.{name}")
for sub in ("transforms", "ops", "models", "io", "utils", "transforms.functional"):
    m = _Mod(f"torchvision.{sub}")
    sys.modules[f"torchvision.{sub}"] = m
transforms = sys.modules["torchvision.transforms"]
transforms.functional = sys.modules["torchvision.transforms.functional"]
ops = sys.modules["torchvision.ops"]
models = sys.modules["torchvision.models"]
io = sys.modules["torchvision.io"]
utils = sys.modules["torchvision.utils"]
