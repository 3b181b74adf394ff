"""Issue 13, item 1: the cut does not depend on the machine's ffmpeg.

The bundled ffmpeg (imageio-ffmpeg) is used unless KLING_RENDER_FFMPEG names another; PATH is
never searched. A chosen ffmpeg is checked once (version, filters, encoders, xfade transitions)
and what it lacks is a validation error at the line that needs it, naming the binary.

The "old ffmpeg" here is a small shell script in front of the bundled binary that answers
``-version`` as 5.1.2 (or 4.4.2) and leaves some transitions out of ``-h filter=xfade``, so these
tests do not need a second ffmpeg installed. Where a real other ffmpeg exists (Debian's, as CI
installs it), the same checks also run against it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cli import EXAMPLE, Workspace, base_env

from kling_render.media import caps as ffmpeg_caps
from kling_render.media import ffmpeg
from kling_render.media.probe import probe

BUNDLED = ffmpeg.bundled_exe()
MISSING_IN_SHIM = ("hlwind", "coverleft", "revealup")

PROJECT = """\
version: 1
name: pinned
provider: local
defaults: {model: kling-video-o3-std/image-to-video, duration: 3}
shots:
  - id: one
    prompt: "a mug"
    image: images/mug.png
    sound: true
  - id: two
    prompt: "the mug, full"
    image: images/mug.png
    end_image: images/mug-full.png
    transition: {type: TRANSITION, duration: 0.5}
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
audio: {music: audio/bed.mp3, music_volume: 0.4, duck: true, normalize: true}
"""


def other_ffmpegs() -> list[str]:
    """Real ffmpeg binaries on this machine other than the bundled one (Debian's in CI)."""
    found: dict[str, str] = {os.path.realpath(BUNDLED): BUNDLED}
    for candidate in (shutil.which("ffmpeg"), "/usr/bin/ffmpeg"):
        if candidate and os.access(candidate, os.X_OK):
            found.setdefault(os.path.realpath(candidate), candidate)
    return [path for path in found.values() if path != BUNDLED]


def write_shim(path: Path, *, version: str = "5.1.2", log: Path | None = None) -> Path:
    """An executable ``ffmpeg`` that claims ``version`` and lacks MISSING_IN_SHIM transitions."""
    hide = "|".join(MISSING_IN_SHIM)
    logging = f'echo "$*" >> "{log}"\n' if log is not None else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f"{logging}"
        'case "$*" in\n'
        f'  *-version*) echo "ffmpeg version {version} Copyright (c) 2000-2022 the FFmpeg developers"; '
        'echo "configuration: --shim"; exit 0 ;;\n'
        f'  *filter=xfade*) "{BUNDLED}" "$@" | grep -v -E "^ +({hide}) " ; exit 0 ;;\n'
        "esac\n"
        f'exec "{BUNDLED}" "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def write_trap(directory: Path, log: Path) -> Path:
    """An ``ffmpeg`` that must never run: it records the call and fails."""
    trap = directory / "ffmpeg"
    directory.mkdir(parents=True, exist_ok=True)
    trap.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit 1\n')
    trap.chmod(0o755)
    return trap


def workspace(root: Path, transition: str = "fade", **env: str) -> Workspace:
    root.mkdir(parents=True)
    shutil.copytree(EXAMPLE / "images", root / "images")
    shutil.copytree(EXAMPLE / "audio", root / "audio")
    (root / "project.yaml").write_text(PROJECT.replace("TRANSITION", transition))
    return Workspace(root, base_env(**env))


@pytest.fixture
def fresh_choice() -> Iterator[None]:
    """Tests that set KLING_RENDER_FFMPEG in this process start and end with no binary remembered."""
    ffmpeg_caps.reset()
    yield
    ffmpeg_caps.reset()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the cut does not depend on PATH --------------------------------------------------------------


def test_cut_is_identical_whatever_ffmpeg_is_first_on_path(tmp_path: Path) -> None:
    shared_cache = tmp_path / "clips"  # the clips are made once; each workspace stitches its own cut
    plain = workspace(tmp_path / "plain", KLING_RENDER_CACHE=str(shared_cache))
    done = plain.render("--provider", "local")
    assert done.returncode == 0, done.stderr
    reference = sha(plain.final_cut)

    trap_log = tmp_path / "trap.log"
    trap_dir = write_trap(tmp_path / "trap-bin", trap_log).parent
    paths = {"trap": str(trap_dir)}
    paths.update({f"real {other}": str(Path(other).parent) for other in other_ffmpegs()})
    for label, directory in paths.items():
        env = base_env(KLING_RENDER_CACHE=str(shared_cache))
        env["PATH"] = f"{directory}{os.pathsep}{env['PATH']}"
        ws = workspace(tmp_path / label.replace("/", "_").replace(" ", "-"), KLING_RENDER_CACHE=str(shared_cache))
        ws.env = env
        done = ws.render("--provider", "local")
        assert done.returncode == 0, (label, done.stderr)
        assert "final cut:" in done.stderr  # a real stitch in this workspace, not a skip
        assert sha(ws.final_cut) == reference, f"the cut differs with {label} first on PATH"
        version = ws.cli("--version")
        assert BUNDLED in version.stdout, version.stdout
    assert not trap_log.exists(), "an ffmpeg on PATH was run: " + trap_log.read_text()
    print(f"identical cuts with: none, {', '.join(paths)} first on PATH")


def test_version_names_the_ffmpeg_in_use(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "v")
    done = ws.cli("--version")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    from kling_render import __version__

    assert lines[0] == f"kling-render {__version__}"
    assert lines[1].startswith("ffmpeg n9.") and f"({BUNDLED}, bundled)" in lines[1]
    shim = write_shim(tmp_path / "bin" / "old-ffmpeg")
    done = ws.cli("--version", env=base_env(KLING_RENDER_FFMPEG=str(shim)))
    assert done.returncode == 0
    assert f"ffmpeg 5.1.2 ({shim}, from KLING_RENDER_FFMPEG)" in done.stdout
    missing = ws.cli("--version", env=base_env(KLING_RENDER_FFMPEG=str(tmp_path / "nope")))
    assert missing.returncode == 2 and "cannot be used" in missing.stdout
    # A bare name is what the user asked for: looked up on PATH (and only then).
    env = base_env(KLING_RENDER_FFMPEG="old-ffmpeg")
    env["PATH"] = f"{shim.parent}{os.pathsep}{env['PATH']}"
    named = ws.cli("--version", env=env)
    assert named.returncode == 0 and f"ffmpeg 5.1.2 ({shim}, from KLING_RENDER_FFMPEG)" in named.stdout


# -- a chosen ffmpeg is checked -------------------------------------------------------------------


def test_transition_the_chosen_ffmpeg_lacks_fails_validate(tmp_path: Path) -> None:
    shim = write_shim(tmp_path / "bin" / "ffmpeg-5.1")
    ws = workspace(tmp_path / "p", "hlwind")
    env = base_env(KLING_RENDER_FFMPEG=str(shim))
    done = ws.cli("validate", str(ws.project), env=env)
    assert done.returncode == 2, done.stderr
    line = 1 + PROJECT.splitlines().index("    transition: {type: TRANSITION, duration: 0.5}")
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        f"error: project.yaml:{line}: shots[1].transition.type: ffmpeg 5.1.2 ({shim}, from KLING_RENDER_FFMPEG) "
        f"has no xfade transition 'hlwind' (it has {58 - len(MISSING_IN_SHIM)}; `ffmpeg -h filter=xfade` lists them); "
        "unset KLING_RENDER_FFMPEG to use the bundled ffmpeg"
    ], done.stderr
    assert "nothing was written" in done.stderr
    # render refuses the same way, before anything is rendered or written
    refused = ws.render("--provider", "local", env=env)
    assert refused.returncode == 2 and "hlwind" in refused.stderr
    assert not (ws.root / ".kling-render").exists() and not ws.final_cut.exists()
    # the bundled ffmpeg has the transition; the shim has the ones it did not hide
    assert ws.cli("validate", str(ws.project)).returncode == 0
    ws.edit("type: hlwind", "type: wipeleft")
    assert ws.cli("validate", str(ws.project), env=env).returncode == 0


def test_a_real_older_ffmpeg_is_checked_too(tmp_path: Path) -> None:
    others = other_ffmpegs()
    if not others:
        pytest.skip("no ffmpeg besides the bundled one (CI installs Debian's)")
    for other in others:
        build = ffmpeg_caps.inspect(other, explicit=True)
        lacking = sorted(ffmpeg_caps.needed_transitions() - build.transitions)
        ws = workspace(tmp_path / Path(other).name / str(len(lacking)), lacking[0] if lacking else "fade")
        done = ws.cli("validate", str(ws.project), env=base_env(KLING_RENDER_FFMPEG=other))
        if lacking:  # Debian 12's 5.1 lacks 12 of them (hlwind, coverleft, revealup, ...)
            assert done.returncode == 2 and f"has no xfade transition '{lacking[0]}'" in done.stderr
            assert f"ffmpeg {build.version} ({other}, from KLING_RENDER_FFMPEG)" in done.stderr
        else:
            assert done.returncode == 0, done.stderr
        print(f"{other}: {build.version}, lacks {len(lacking)} transitions: {', '.join(lacking)}")


def test_too_old_or_broken_ffmpeg_is_a_validation_error(tmp_path: Path) -> None:
    ws = workspace(tmp_path / "p")
    old = write_shim(tmp_path / "bin" / "ffmpeg-4", version="4.4.2")
    done = ws.cli("validate", str(ws.project), env=base_env(KLING_RENDER_FFMPEG=str(old)))
    assert done.returncode == 2
    assert f"error: project.yaml: ffmpeg 4.4.2 ({old}, from KLING_RENDER_FFMPEG) is older than 5.1" in done.stderr
    not_ffmpeg = tmp_path / "bin" / "true-ish"
    not_ffmpeg.write_text("#!/bin/sh\necho hello\n")
    not_ffmpeg.chmod(0o755)
    for bad in (not_ffmpeg, tmp_path / "missing"):
        done = ws.cli("validate", str(ws.project), env=base_env(KLING_RENDER_FFMPEG=str(bad)))
        assert done.returncode == 2, done.stderr
        assert f"KLING_RENDER_FFMPEG ({bad}) cannot be used" in done.stderr and "Traceback" not in done.stderr


def test_the_check_runs_once_per_binary_until_it_changes(tmp_path: Path, fresh_choice: None) -> None:
    log = tmp_path / "calls.log"
    shim = write_shim(tmp_path / "bin" / "ffmpeg", log=log)
    ws = workspace(tmp_path / "p")
    env = base_env(KLING_RENDER_FFMPEG=str(shim))
    for _ in range(2):
        assert ws.cli("validate", str(ws.project), env=env).returncode == 0
    # Only the capability queries: validate also probes the project's music with the chosen ffmpeg.
    asked = [line for line in log.read_text().splitlines() if " -i " not in line]
    assert sorted(asked) == sorted(["-hide_banner -version", "-hide_banner -filters", "-hide_banner -encoders",
                                    "-hide_banner -h filter=xfade"])  # fmt: skip
    os.utime(shim, ns=(shim.stat().st_atime_ns, shim.stat().st_mtime_ns + 10**9))  # a new build in place
    assert ws.cli("validate", str(ws.project), env=env).returncode == 0
    assert len([line for line in log.read_text().splitlines() if " -i " not in line]) == 8


def test_parsers_read_both_listing_styles() -> None:
    five = " ... acrossfade        AA->A      Cross fade two input audio streams.\n .S. xfade  VV->V  x\n"
    nine = " .. acrossfade        N->A       Cross fade two input audio streams.\n .S xfade   VV->V  x\n"
    assert ffmpeg_caps.parse_filters(five) == ffmpeg_caps.parse_filters(nine) == {"acrossfade", "xfade"}
    legend = " V..... = Video\n ------\n V....D libx264   libx264 H.264\n A..... aac  AAC\n"
    assert ffmpeg_caps.parse_encoders(legend) == {"libx264", "aac"}
    assert ffmpeg_caps.parse_release("5.1.9-0+deb12u1") == (5, 1)
    assert ffmpeg_caps.parse_release("n9.0.2-17-g2a571b6068-20260930") == (9, 0)
    assert ffmpeg_caps.parse_release("N-113000-gdeadbeef") is None  # a git snapshot: not "too old"
    bundled = ffmpeg_caps.inspect(BUNDLED)
    assert ffmpeg_caps.needed_transitions() <= bundled.transitions  # the schema offers only what we ship


def test_local_animatic_is_exact_with_another_real_ffmpeg(tmp_path: Path) -> None:
    """ffmpeg 5.1 with an end image and sound used to give 2.944 s of audio in a 3 s clip."""
    others = other_ffmpegs()
    if not others:
        pytest.skip("no ffmpeg besides the bundled one (CI installs Debian's)")
    for other in others:
        ws = workspace(tmp_path / Path(other).parent.name.replace("/", "_"))
        ws.edit("    sound: true\n", "")
        ws.edit("    end_image: images/mug-full.png\n", "    end_image: images/mug-full.png\n    sound: true\n")
        done = ws.render("--provider", "local", "--no-stitch", env=base_env(KLING_RENDER_FFMPEG=other))
        assert done.returncode == 0, done.stderr
        for clip in ws.clips("local"):
            streams = [("0:v:0", 3.0)] + ([("0:a:0", 3.0)] if probe(clip).has_audio else [])
            for stream, want in streams:
                out = subprocess.run(
                    [BUNDLED, "-i", str(clip), "-map", stream, "-f", "null", "-progress", "pipe:1", "-nostats", "-"],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                times = [ln.split("=")[1] for ln in out.splitlines() if ln.startswith("out_time_us=")]
                seconds = int(times[-1]) / 1e6
                assert seconds == pytest.approx(want, abs=0.001), (other, clip.name, stream, seconds)
        assert any(probe(c).has_audio for c in ws.clips("local"))
