"""Providers behind one seam (``base.Provider``): ``wavespeed`` (real) and ``local`` (offline)."""

from __future__ import annotations

import sys
from pathlib import Path

from kling_render.errors import UsageError
from kling_render.providers.base import Provider

PROVIDER_NAMES = ("local", "wavespeed")

# httpx's package imports its own command-line client (httpx._main) whenever rich, pygments and
# click are installed, as they are with kling-render: about 0.1 s of CPU at every start, for a
# command we never run. Marking it absent before the first `import httpx` (every one is under this
# package) gives httpx its fallback stub instead.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def make_provider(name: str, *, cache_dir: Path) -> Provider:
    """The provider called ``name``; ``cache_dir`` is the clip cache root (for upload records)."""
    if name == "local":
        from kling_render.providers.local import LocalProvider

        return LocalProvider(cache_dir=cache_dir)
    if name == "wavespeed":
        from kling_render.providers.wavespeed.client import WaveSpeedProvider

        return WaveSpeedProvider.from_env(cache_dir=cache_dir)
    raise UsageError(f"unknown provider {name!r} (choose from {', '.join(PROVIDER_NAMES)})")


def provider_charges(name: str) -> bool:
    """Whether the provider called ``name`` charges for tasks (the budget applies), without making one."""
    if name == "local":
        from kling_render.providers.local import LocalProvider

        return LocalProvider.charges
    return True
