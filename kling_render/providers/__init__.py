"""Providers behind one seam (``base.Provider``): ``wavespeed`` and ``fal`` (real), ``local`` (offline)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kling_render.catalog.catalog import PAID_PROVIDERS
from kling_render.errors import UsageError

if TYPE_CHECKING:  # the clients (and the money module under them) load only when a command makes one:
    from kling_render.providers.base import Provider  # `plan`, `validate`, `--help` need none (~0.15 s)

PROVIDER_NAMES = ("local", *PAID_PROVIDERS)

# httpx's package imports its own command-line client (httpx._main) whenever rich, pygments and
# click are installed, as they are with kling-render: about 0.1 s of CPU at every start, for a
# command we never run. Marking it absent before the first `import httpx` (every one is under this
# package) gives httpx its fallback stub instead.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def make_provider(name: str, *, cache_dir: Path, endpoints: Iterable[str] = ()) -> Provider:
    """The provider called ``name``; ``cache_dir`` is the clip cache root (for upload records),
    ``endpoints`` the model endpoints its jobs use (fal follows a request by its app)."""
    if name == "local":
        from kling_render.providers.local import LocalProvider

        return LocalProvider(cache_dir=cache_dir)
    if name == "wavespeed":
        from kling_render.providers.wavespeed.client import WaveSpeedProvider

        return WaveSpeedProvider.from_env(cache_dir=cache_dir)
    if name == "fal":
        from kling_render.providers.fal.client import FalProvider

        return FalProvider.from_env(cache_dir=cache_dir, endpoints=endpoints)
    raise UsageError(f"unknown provider {name!r} (choose from {', '.join(PROVIDER_NAMES)})")


def check_provider(name: str) -> None:
    """Raise what ``make_provider(name)`` would (a missing or malformed key, a bad URL) without
    making a client: a run checks every provider it needs before it writes anything."""
    if name == "wavespeed":
        from kling_render.providers.wavespeed.client import WaveSpeedProvider

        WaveSpeedProvider.settings_from_env()
    elif name == "fal":
        from kling_render.providers.fal.client import FalProvider

        FalProvider.settings_from_env()
    elif name != "local":
        raise UsageError(f"unknown provider {name!r} (choose from {', '.join(PROVIDER_NAMES)})")


def provider_charges(name: str) -> bool:
    """Whether the provider called ``name`` charges for tasks (the budget applies), without making one
    or loading its client: the paid providers of the catalog do (each client's ``charges`` says the
    same: tests/unit/test_step_providers.py)."""
    return name in PAID_PROVIDERS
