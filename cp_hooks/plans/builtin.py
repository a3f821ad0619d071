"""The built-in plans. Importing this module registers them.

Each plan lives in its model family's file under `cp_hooks/models/`, next to the tiny config and the input
cases that verify it (see `cp_hooks.catalogue`); this module only registers them for their diffusers classes.
"""

from __future__ import annotations

from cp_hooks.verify.catalogue import register_builtin_plans

register_builtin_plans()
