"""With a remote, the team's outputs that key other steps, settled before any key is computed.

A step that takes another step's output (a still's image, a frame of a shot's clip) is keyed by
that output's digest, and with a remote the team's output is the one (SPEC §6: the remote's record
is the team's). So before a render plans, and before a stitch cuts, the outputs that are inputs of
other steps are pulled from the remote, or replace a differing one made here, each checked as a
download is (a still as an image, a clip as a clip), round after round, as each round's outputs
key the next ones. Otherwise two machines would key a shot on two different stills and pay for it
twice. A render leaves every other output to its gate (run/remote_gate.py: claims, pulls,
pushes); a stitch pulls the clips its cut takes as well.
"""

from __future__ import annotations

from kling_render.media.image_check import check_image
from kling_render.plan.inputs import edges, resolve, take_name
from kling_render.project.generated import STILL_PREFIX
from kling_render.project.project import Project
from kling_render.report.progress import EventSink
from kling_render.run.scheduler import default_verify
from kling_render.store.cache import ClipCache, stills_of
from kling_render.store.outputs import CachedOutputs
from kling_render.store.remote.connect import Remote
from kling_render.store.remote.sync import pull_missing

__all__ = ["gather_team_outputs"]


def gather_team_outputs(
    project: Project, provider: str, cache: ClipCache, remote: Remote, sink: EventSink, *, cut: bool
) -> list[str]:
    """Pull (or replace with the team's) every output another step takes as an input, and with
    ``cut`` every clip the final cut takes, each from its own provider's area (``provider`` is the
    project's); the names of the steps pulled or replaced. ``cut`` (a stitch): a damaged output on
    the remote is an error naming it; otherwise (a render) it is left to the render's gate, which
    refuses its step and pays nothing for it. A project whose steps take no outputs, rendered, asks
    the remote nothing here."""
    inputs = {edge.upstream for edge in edges(project)}
    if cut:
        inputs |= {take_name(shot, shot.picked_take) for shot in project.shots}
    if not inputs:  # no step takes another's output (and no cut): nothing here keys on the team's outputs
        return []
    stills = stills_of(cache)
    seen: set[tuple[str, str]] = set()  # (provider, key) looked for already (a stand-in key is never on the remote)
    done: list[str] = []
    while True:  # each round's outputs may key the next round's: as many rounds as the chain is deep
        units = resolve(project, provider, CachedOutputs(cache)).units
        fresh = {
            name: units[name]
            for name in inputs
            if name in units and (units[name].provider, units[name].some_key) not in seen
        }
        if not fresh:
            return done
        seen |= {(unit.provider, unit.some_key) for unit in fresh.values()}
        pulled: list[str] = []
        for where in dict.fromkeys(unit.provider for unit in fresh.values()):  # each step on its own provider
            mine = {name: unit for name, unit in fresh.items() if unit.provider == where}
            made = {name: unit.some_key for name, unit in mine.items() if name.startswith(STILL_PREFIX)}
            clips = {name: unit.some_key for name, unit in mine.items() if not name.startswith(STILL_PREFIX)}
            if made:
                pulled += pull_missing(remote.stills, where, made, stills, sink, check_image, strict=cut)
            if clips:
                pulled += pull_missing(remote.clips, where, clips, cache, sink, default_verify, strict=cut)
        if not pulled:  # nothing here changed: no key changes either
            return done
        done += pulled
