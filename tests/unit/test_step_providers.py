"""Each paid step of a render carries its own provider (a shot's or a still's ``provider:``, else the
project's): its key, price, cache lookups and wire body are that provider's, and a step that waits
for another step's output is resolved on its own provider, whatever its upstream's is."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import make_image

from kling_render.app.generation import paid_steps, step_providers
from kling_render.jobs import MediaRef
from kling_render.plan.inputs import ClipFacts, NothingMade, StillFacts, resolve, still_key, take_key
from kling_render.plan.plan import build_plan, take_job
from kling_render.project.loader import load_project

MIXED = """\
version: 1
name: mixed
provider: wavespeed
stills:
  - {id: hero, model: bytedance/seedream-v4.5, prompt: "a mug", size: "1280*720"}
defaults: {model: kling-v3.0-std/image-to-video, duration: 3}
shots:
  - {id: a, provider: fal, prompt: "shot a", image: images/good.png}
  - {id: b, provider: local, prompt: "shot b", image: images/good.png}
  - {id: c, prompt: "shot c", image: images/good.png}
  - {id: d, provider: fal, prompt: "shot d", image: {still: hero}}
output: {path: renders/out.mp4, width: 320, height: 180, fps: 24}
"""


class MadeOn:
    """Outputs made, each on one provider: a lookup on another provider finds nothing."""

    def __init__(self, stills: dict[tuple[str, str], StillFacts]) -> None:
        self.stills = stills
        self.asked: list[tuple[str, str]] = []

    def still(self, provider: str, key: str) -> StillFacts | None:
        self.asked.append((provider, key))
        return self.stills.get((provider, key))

    def clip(self, provider: str, key: str) -> ClipFacts | None:
        return None

    def frame(self, key_value: str) -> StillFacts | None:
        return None


@pytest.fixture
def project_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_image(tmp_path / "images" / "good.png", 640, 360)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(MIXED)
    return tmp_path / "p.yaml"


def test_every_step_carries_its_own_provider_and_price(project_path: Path) -> None:
    project = load_project(project_path)
    plan = build_plan(project, project.provider, is_cached=lambda key, provider: False)
    steps = {s.name: s for s in paid_steps(plan, shard=None, until=None)}
    assert {n: (s.kind, s.provider) for n, s in steps.items()} == {
        "still:hero": ("still", "wavespeed"), "a": ("clip", "fal"), "b": ("clip", "local"),
        "c": ("clip", "wavespeed"), "d": ("clip", "fal"),
    }  # fmt: skip
    # fal's price and endpoint for a and d, WaveSpeed's for c; the free local provider pays nothing.
    assert steps["a"].cost_usd == pytest.approx(0.252) and steps["c"].cost_usd == pytest.approx(0.252)
    assert steps["b"].cost_usd == 0.0 and steps["b"].job is not None and steps["b"].job.cost_usd == 0.0
    assert steps["still:hero"].cost_usd == pytest.approx(0.04)
    assert steps["a"].job is not None and steps["a"].job.endpoint == "fal-ai/kling-video/v3/standard/image-to-video"
    assert "start_image_url" in steps["a"].job.params and "image" not in steps["a"].job.params
    assert steps["c"].job is not None and steps["c"].job.endpoint == "kwaivgi/kling-v3.0-std/image-to-video"
    assert "image" in steps["c"].job.params
    # d waits for the still (made on WaveSpeed); it has no job until then
    assert steps["d"].job is None and steps["d"].waits == ("still:hero",)
    assert step_providers(plan) == ["wavespeed", "fal", "local"]
    # the same shot on two providers: two keys (one clip per provider)
    assert steps["a"].job.key != steps["c"].job.key
    assert steps["a"].job.key == take_key("fal", project.shot("a"))
    assert steps["c"].job.key == take_key("wavespeed", project.shot("c"))


def test_a_waiting_step_resolves_on_its_own_provider_from_its_upstreams_output_on_another(
    project_path: Path,
) -> None:
    project = load_project(project_path)
    hero = project.stills[0]
    image = (project_path.parent / "images" / "good.png").read_bytes()
    digest = hashlib.sha256(image).hexdigest()
    hero_key = still_key("wavespeed", hero)
    # The still made on fal's namespace (a key it never has there) leaves d waiting.
    elsewhere = MadeOn({("fal", hero_key): StillFacts(digest)})
    assert resolve(project, project.provider, elsewhere).units["d"].key is None
    made = MadeOn({("wavespeed", hero_key): StillFacts(digest)})
    unit = resolve(project, project.provider, made).units["d"]
    assert ("wavespeed", hero_key) in made.asked
    assert unit.provider == "fal" and unit.key is not None
    own = {**project.shot("d").params, "image": MediaRef(sha256=digest)}
    assert unit.key == take_key("fal", project.shot("d"), params=own)
    job = take_job(project.shot("d"), unit, Fraction("0.252"))
    assert (job.provider, job.endpoint) == ("fal", "fal-ai/kling-video/v3/standard/image-to-video")
    assert isinstance(job.params["start_image_url"], MediaRef) and job.params["start_image_url"].sha256 == digest
    assert job.params["duration"] == "3", "fal takes its durations as text"
    assert resolve(project, project.provider, NothingMade()).units["d"].provider == "fal"


def test_the_plans_tables_name_each_steps_provider_when_there_are_several(project_path: Path) -> None:
    from kling_render.report.text import plan_markdown_full, plan_table

    project = load_project(project_path)
    plan = build_plan(project, project.provider, is_cached=lambda key, provider: False)
    table = plan_table(plan)
    head = next(line for line in table.splitlines() if line.startswith("shot "))
    assert head.split()[:3] == ["shot", "model", "provider"]
    rows = {line.split()[0]: line.split()[2] for line in table.splitlines() if line[:2] in ("a ", "b ", "c ", "d ")}
    assert rows == {"a": "fal", "b": "local", "c": "wavespeed", "d": "fal"}
    still = ["still:hero", "bytedance/seedream-v4.5", "wavespeed"]
    assert any(line.split()[:3] == still for line in table.splitlines())
    markdown = plan_markdown_full(plan)
    assert "| shot | model | provider | duration |" in markdown
    assert "| `a` | kling-v3.0-std/image-to-video | fal | 3s |" in markdown
    assert "| `still:hero` | bytedance/seedream-v4.5 | wavespeed | $0.0400 |" in markdown

    # one provider for every step: no provider column (the head line names it)
    (project_path.parent / "one.yaml").write_text(MIXED.replace("provider: fal, ", "").replace("provider: local, ", ""))
    single = load_project(project_path.parent / "one.yaml")
    plan = build_plan(single, single.provider, is_cached=lambda key, provider: False)
    table = plan_table(plan)
    assert next(line for line in table.splitlines() if line.startswith("shot ")).split()[:3] == ["shot", "model", "dur"]
    assert "| shot | model | duration |" in plan_markdown_full(plan)


def test_which_providers_charge_is_what_their_clients_say() -> None:
    """``provider_charges`` answers from the catalog without loading a client; each client agrees."""
    from kling_render.providers import PROVIDER_NAMES, provider_charges
    from kling_render.providers.fal.client import FalProvider
    from kling_render.providers.local import LocalProvider
    from kling_render.providers.wavespeed.client import WaveSpeedProvider

    clients = {"local": LocalProvider, "wavespeed": WaveSpeedProvider, "fal": FalProvider}
    assert set(PROVIDER_NAMES) == set(clients)
    assert {name: provider_charges(name) for name in PROVIDER_NAMES} == {n: c.charges for n, c in clients.items()}
    assert provider_charges("local") is False
