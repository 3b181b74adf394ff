"""``init``: drawn example images within the model limits, a project that follows SPEC §3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from kling_render.app.initproject import write_example_images, write_init_project
from kling_render.errors import UsageError

EXPECTED_SIZES = {"mug.png": (1280, 720), "mug-side.png": (720, 720), "mug-full.png": (1280, 720)}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project written by init, shared by the read-only checks (drawing takes a moment)."""
    return write_init_project(tmp_path_factory.mktemp("init") / "my-film")


def _within_v3_limits(path: Path) -> None:
    assert path.stat().st_size < 60 * 1024, f"{path.name} is {path.stat().st_size} bytes"
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert min(w, h) >= 300
    assert 1 / 2.5 <= w / h <= 2.5


def test_example_images_have_their_sizes_and_pass_the_limits(tmp_path: Path) -> None:
    paths = write_example_images(tmp_path / "images")
    assert {p.name for p in paths} == set(EXPECTED_SIZES)
    for path in paths:
        _within_v3_limits(path)
        with Image.open(path) as im:
            assert im.size == EXPECTED_SIZES[path.name]
            assert len(im.convert("RGB").resize((32, 18)).getcolors(576) or []) > 20  # a picture, not a fill
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(EXPECTED_SIZES)  # no temp files


def test_drawing_is_deterministic(tmp_path: Path, film: Path) -> None:
    again = write_example_images(tmp_path / "again")
    assert [p.read_bytes() for p in again] == [(film.parent / "images" / p.name).read_bytes() for p in again]


def test_committed_example_images_are_small_and_valid() -> None:
    images = REPO / "projects" / "mug-teaser" / "images"
    for name, size in EXPECTED_SIZES.items():
        _within_v3_limits(images / name)
        with Image.open(images / name) as im:
            assert im.size == size


def test_init_writes_a_project_with_only_spec_keys(film: Path) -> None:
    dest = film.parent
    project = film
    assert project == dest / "project.yaml"
    text = project.read_text("utf-8")
    doc = yaml.safe_load(text)
    assert doc["version"] == 1
    assert doc["provider"] == "local"
    assert doc["name"] == "my-film"
    top_keys = {
        "version",
        "name",
        "provider",
        "budget",
        "vars",
        "prompts",
        "defaults",
        "shots",
        "output",
        "audio",
    }
    assert set(doc) <= top_keys
    shot_keys = {
        "id", "model", "prompt", "image", "end_image", "images", "duration", "sound", "transition", "trim",
        "aspect_ratio", "multi_prompt", "negative_prompt", "cfg_scale", "take",
    }  # fmt: skip
    models = {
        "kling-video-o3-std/image-to-video",
        "kling-v3.0-pro/image-to-video",
        "kling-v3.0-std/image-to-video",
        "kling-video-o1-std/image-to-video",
        "kling-video-o3-std/reference-to-video",
    }
    assert 2 <= len(doc["shots"]) <= 3
    for shot in doc["shots"]:
        assert set(shot) <= shot_keys
        assert shot.get("model", doc["defaults"]["model"]) in models
        for ref in [shot.get("image"), shot.get("end_image"), *shot.get("images", [])]:
            if ref is not None:
                _within_v3_limits(dest / ref)
    assert {".kling-render/", "renders/"} <= set((dest / ".gitignore").read_text().split())


def test_init_points_at_a_schema_copied_beside_the_project(film: Path) -> None:
    project = film
    first = project.read_text("utf-8").splitlines()[0]
    packaged = REPO / "kling_render" / "data" / "project.schema.json"
    if not packaged.is_file():
        pytest.skip("the packaged schema is not there yet")
    assert first == "# yaml-language-server: $schema=./project.schema.json"
    assert (film.parent / "project.schema.json").read_bytes() == packaged.read_bytes()


def test_init_validates_against_the_schema(film: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    project = film
    schema_file = film.parent / "project.schema.json"
    if not schema_file.is_file():
        pytest.skip("the packaged schema is not there yet")
    import json

    jsonschema.validate(
        yaml.safe_load(project.read_text("utf-8")), json.loads(schema_file.read_text("utf-8"))
    )


def test_init_refuses_to_overwrite_a_project(tmp_path: Path) -> None:
    dest = tmp_path / "p"
    dest.mkdir()
    (dest / "project.yaml").write_text("version: 1\n")
    with pytest.raises(UsageError, match="already exists"):
        write_init_project(dest)
    assert (dest / "project.yaml").read_text() == "version: 1\n"
    assert not (dest / "images").exists()


def test_init_extends_an_existing_gitignore(tmp_path: Path) -> None:
    dest = tmp_path / "p"
    dest.mkdir()
    (dest / ".gitignore").write_text("mine\nrenders/")
    write_init_project(dest)
    lines = (dest / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["mine", "renders/"]
    assert lines.count("renders/") == 1 and ".kling-render/" in lines


def test_init_project_loads(film: Path) -> None:
    project_module = pytest.importorskip("kling_render.project.loader")
    project = project_module.load_project(film)
    assert [s.id for s in project.shots] == ["intro", "pour", "hero"]


@pytest.mark.usefixtures("small_local")  # the run's outcome is the subject, not the animatics' size
def test_init_command_then_render_offline(tmp_path: Path) -> None:
    """What a new user types: init, then render with the local provider, then a second render costs nothing."""
    from click.testing import CliRunner

    from kling_render.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["init", str(tmp_path / "film")])
    assert result.exit_code == 0, result.output
    project = tmp_path / "film" / "project.yaml"
    assert "kling-render render" in result.stdout
    again = runner.invoke(cli, ["init", str(tmp_path / "film")])
    assert again.exit_code == 2 and "project.yaml" in again.stderr
    rendered = runner.invoke(cli, ["render", str(project), "--no-stitch", "--json"])
    assert rendered.exit_code == 0, rendered.output
    shots = yaml.safe_load(project.read_text())["shots"]
    events = [json.loads(line) for line in rendered.stdout.splitlines()]
    doc = events[-1]
    assert doc["event"] == "finished"
    assert [s["status"] for s in doc["shots"]] == ["done"] * len(shots)
