"""Issue 12, budget integrity: no value may switch the budget off or break a total.

NaN compares false with every bound, so `minimum: 0` and click's FloatRange let `.nan` through and
a NaN budget never stopped a submit. Against the stand-in server, counting paid tasks: a
non-finite or negative budget, `--max-cost` or price is refused (exit 2, nothing submitted);
`max_usd: 0` means "spend nothing" (exit 3, through the real CLI); a NaN cost in a lock file is one
clear line. The refusals run the commands in this process (``in_process``): what they prove is the
check, not the process around it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from e2e_cli import SMALL_PROJECT, Workspace, small_workspace, ws_env
from fake_wavespeed import FakeWaveSpeed

HUGE = "9" * 400  # an integer no float can hold


def workspace(tmp_path: Path, fake_wavespeed: FakeWaveSpeed, extra: str = "", *, in_process: bool = True) -> Workspace:
    env = ws_env(fake_wavespeed.base_url)
    return small_workspace(tmp_path / "p", env, SMALL_PROJECT + extra, in_process=in_process)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, module_fake_wavespeed: FakeWaveSpeed) -> Path:
    """The small project rendered once (3 paid tasks at the module's stand-in), for tests that
    damage what a render leaves and copy it first."""
    ws = workspace(tmp_path_factory.mktemp("rendered"), module_fake_wavespeed)
    done = ws.render()
    assert done.returncode == 0 and len(module_fake_wavespeed.submits()) == 3, done.stderr
    return ws.root


def line_of(ws: Workspace, needle: str) -> int:
    return next(n for n, line in enumerate(ws.project.read_text().splitlines(), 1) if needle in line)


def one_error(stderr: str) -> str:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith(("error: ", "Error: "))]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "-1", "-0.01", HUGE, "1.0e+400"])
def test_a_budget_that_is_not_a_finite_amount_is_rejected_with_its_line(
    tmp_path: Path, fake_wavespeed: FakeWaveSpeed, value: str
) -> None:
    ws = workspace(tmp_path, fake_wavespeed, f"budget: {{max_usd: {value}}}\n")
    for command in ("validate", "plan", "render"):
        done = ws.cli(command, str(ws.project))
        assert done.returncode == 2, (command, done.stderr)
        error = one_error(done.stderr)
        assert re.match(rf"error: project\.yaml:{line_of(ws, 'max_usd')}(:\d+)?: budget\.max_usd: ", error), error
    assert fake_wavespeed.submits() == [] and not (ws.root / ".kling-render").exists()


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "-1", "1e999", "ten", ""])
def test_max_cost_must_be_a_finite_amount(tmp_path: Path, fake_wavespeed: FakeWaveSpeed, value: str) -> None:
    ws = workspace(tmp_path, fake_wavespeed)
    done = ws.render("--max-cost", value)
    assert done.returncode == 2, done.stderr
    assert "--max-cost" in one_error(done.stderr)
    assert fake_wavespeed.submits() == [] and not (ws.root / ".kling-render").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--poll-interval", "nan"), ("--poll-interval", "inf"), ("--wait-lock", "nan"), ("--wait-lock", "-1")],
)
def test_other_float_options_are_finite_too(
    tmp_path: Path, fake_wavespeed: FakeWaveSpeed, option: str, value: str
) -> None:
    ws = workspace(tmp_path, fake_wavespeed)
    done = ws.cli("render", str(ws.project), option, value)
    assert done.returncode == 2 and option in one_error(done.stderr)
    assert fake_wavespeed.submits() == []


def test_zero_means_spend_nothing(tmp_path: Path, fake_wavespeed: FakeWaveSpeed) -> None:
    ws = workspace(tmp_path, fake_wavespeed, "budget: {max_usd: 0}\n", in_process=False)
    refused = ws.render()  # the real CLI: exit 3
    assert refused.returncode == 3 and "over the budget of $0.0000" in refused.stderr, refused.stderr
    assert fake_wavespeed.submits() == []
    ws.in_process = True
    paid = ws.render("--max-cost", "5")  # the CLI overrides the file
    assert paid.returncode == 0 and len(fake_wavespeed.submits()) == 3, paid.stderr
    cached = ws.render()  # everything cached: a zero budget has nothing to refuse
    assert cached.returncode == 0 and "3 cached" in cached.stderr and len(fake_wavespeed.submits()) == 3
    refused_again = ws.render("--max-cost", "0", "--var", "product=teapot")
    assert refused_again.returncode == 3 and len(fake_wavespeed.submits()) == 3


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("{per_second: .nan}", "per_second"),
        ("{per_second: .inf}", "per_second"),
        ("{per_second: -0.1}", "per_second"),
        ('{per_second: "1/0"}', "per_second"),
        (f'{{per_second: "{HUGE}"}}', "per_second"),
        (f"{{per_second: {HUGE}}}", "per_second"),
        ("{per_second: 0.1, sound_multiplier: .nan}", "sound_multiplier"),
        ("{per_second: 0.1, sound_multiplier: -2}", "sound_multiplier"),
        ('{per_second: 0.1, video_per_second: "3/0"}', "video_per_second"),
    ],
)
def test_pricing_overrides_are_checked_like_the_budget(
    tmp_path: Path, fake_wavespeed: FakeWaveSpeed, spec: str, field: str
) -> None:
    ws = workspace(tmp_path, fake_wavespeed, f"pricing:\n  kling-v3.0-std/image-to-video: {spec}\n")
    for command in ("validate", "plan", "render"):
        done = ws.cli(command, str(ws.project))
        assert done.returncode == 2, (command, done.stderr)
        error = one_error(done.stderr)
        line = line_of(ws, "kling-v3.0-std/image-to-video: {")
        where = rf"pricing\.kling-v3\.0-std/image-to-video\.{field}"
        assert re.match(rf"error: project\.yaml:{line}(:\d+)?: {where}: ", error), error
    assert fake_wavespeed.submits() == []


@pytest.mark.parametrize(
    "cost", ["NaN", "Infinity", "-Infinity", "-1", '"0.5"', "null", "true", HUGE, "1e400", "[1]"]
)
def test_a_bad_cost_in_the_lock_file_is_one_clear_line_never_a_crash_or_a_free_run(
    tmp_path: Path, fake_wavespeed: FakeWaveSpeed, rendered: Path, cost: str
) -> None:
    shutil.copytree(rendered, tmp_path / "p", symlinks=True)
    ws = Workspace(tmp_path / "p", ws_env(fake_wavespeed.base_url), in_process=True)
    lock = ws.root / "project.lock"
    doc = json.loads(lock.read_text())
    text = json.dumps(doc, indent=2).replace(
        f'"cost_usd": {doc["shots"]["beta"]["cost_usd"]}', f'"cost_usd": {cost}', 1
    )
    assert text != json.dumps(doc, indent=2)
    lock.write_text(text)
    for args in (("plan",), ("plan", "--json"), ("render",), ("report",), ("status",)):
        done = ws.cli(args[0], str(ws.project), *args[1:])
        if args[0] == "status":  # status reads the state file and the cache, not the lock
            assert done.returncode == 0, done.stderr
            continue
        assert done.returncode == 1, (args, done.stderr)
        error = one_error(done.stderr)
        assert "project.lock is not valid" in error and "'beta'" in error and "cost_usd" in error, error
        assert "restore it from git" in error
    assert fake_wavespeed.submits() == [] and lock.read_text() == text  # nothing paid, nothing rewritten
