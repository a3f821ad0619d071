"""Built-in plans, one small file per model family: data only. Importing this package registers them.

A plan module defines `PLANS = {"DiffusersClassName": plan, ...}` and, where some configurations of a
class cannot be served, `UNSUPPORTED = {"DiffusersClassName": (UnsupportedConfig(...), ...)}`; classes
missing from the installed diffusers are skipped.
"""

from __future__ import annotations

import importlib

from ..plan import register_plan

_FAMILIES = ("flux", "sd3", "qwenimage", "wan", "pixart", "cogvideox", "hunyuan_video", "hunyuan_video15", "ltx", "ltx2", "mochi", "z_image", "helios", "minimax_h3")


def _register_all() -> None:
    try:
        import diffusers
    except ImportError:  # the plans are for diffusers classes
        return
    for family in _FAMILIES:
        module = importlib.import_module(f"{__name__}.{family}")
        unsupported = getattr(module, "UNSUPPORTED", {})
        for class_name, plan in module.PLANS.items():
            model_class = getattr(diffusers, class_name, None)
            if model_class is not None:
                register_plan(model_class, plan, unsupported=unsupported.get(class_name, ()))


_register_all()
