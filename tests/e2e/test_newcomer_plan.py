"""Issue 23, items 5, 6, 12 and 18: the plan in a pull request, and the remote's errors.

A Markdown plan always fits in a comment and carries its marker; ``plan --detailed-exitcode``
tells CI what the plan means; the cost change compares like with like (a free local preview is
no price baseline); storage errors say in one line what is wrong and which variable to set, and
plan/status name the remote. The remote's errors (one line on the process's stderr) and the large
plans run the real CLI, and so does one ``--detailed-exitcode``; the other exit codes and the
cost-change counting run the commands in this process (``in_process``). The small project rendered
by the local provider is rendered once per module and copied.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import S3_KEY_ID, S3_SECRET, S3_TOKEN, S3Case, small_animatics
from e2e_cli import EXAMPLE, Workspace, base_env
from s3_proxy import Rule, S3Proxy

from kling_render.report.markdown import COMMENT_LIMIT, MARKER

MONEY = re.compile(r"[+-]?\$\d+\.\d{4}")

CATALOG = """\
version: 1
name: catalog
provider: local
budget: {max_usd: 1000}
rows: {from: data/products.csv, key: sku}
defaults: {model: kling-v3.0-std/image-to-video, duration: 3}
shots:
  - id: intro
    prompt: "our studio, slow push-in"
    image: images/mug.png
  - id: hero
    prompt: "the {{ row.name }} on a walnut table"
    image: images/mug.png
  - id: outro
    prompt: "{{ row.name }}: {{ row.tagline }}"
    image: images/mug-full.png
output: {path: "renders/{{ row.sku }}.mp4", width: 320, height: 180, fps: 24}
"""

SMALL = """\
version: 1
name: small
provider: wavespeed
budget: {max_usd: 10}
defaults: {model: kling-v3.0-std/image-to-video, duration: 4}
shots:
  - id: a
    prompt: "shot a"
    image: images/mug.png
  - id: b
    prompt: "shot b"
    image: images/mug.png
  - id: c
    model: kling-video-o3-std/image-to-video
    prompt: "shot c"
    image: images/mug.png
  - id: d
    prompt: "shot d"
    image: images/mug-full.png
output: {path: renders/final.mp4, width: 320, height: 180, fps: 24}
"""


def workspace(root: Path, text: str, env: dict[str, str] | None = None) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE / "images", root / "images")
    (root / "project.yaml").write_text(text)
    return Workspace(root, env or base_env(KLING_RENDER_CACHE=str(root / "cache")))


def write_rows(ws: Workspace, rows: int, tagline: str = "morning coffee, done right, every day") -> None:
    (ws.root / "data").mkdir(exist_ok=True)
    with (ws.root / "data" / "products.csv").open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["sku", "name", "tagline"])
        for i in range(rows):
            out.writerow([f"mug-{i:05d}", f"ceramic mug number {i} with a long name", f"{tagline} {i}"])


def plan(ws: Workspace, *args: str, code: int = 0) -> str:
    done = ws.cli("plan", *args)
    assert done.returncode == code, done.stderr
    return done.stdout


# -- item 5: the Markdown plan fits in a comment ---------------------------------------------------


@pytest.mark.parametrize(("rows", "tagline"), [(500, "coffee"), (3000, "tea " * 200)])
def test_a_large_plan_collapses_below_the_comment_limit(tmp_path: Path, rows: int, tagline: str) -> None:
    ws = workspace(tmp_path / "w", CATALOG)
    write_rows(ws, rows, tagline)
    # a prompt edit of every row (the lock says otherwise) adds prompt diffs to the size
    out = ws.root / "full.md"
    shown = plan(ws, "--format", "markdown", "--provider", "wavespeed", "--out-full", str(out),
                 "--full-url", "https://ci.example/run/7")  # fmt: skip
    whole = out.read_text()
    assert len(whole.encode()) > COMMENT_LIMIT, "the test needs a plan larger than a comment"
    assert len(shown.encode()) <= COMMENT_LIMIT < 65_536
    lines = shown.splitlines()
    assert lines[0] == MARKER and whole.splitlines()[0] == MARKER
    assert "[full.md](https://ci.example/run/7)" in shown
    assert shown.count("<details>") == shown.count("</details>") >= 10  # whole rows, never one cut in two
    assert re.search(r"… and [\d,]+ more row\(s\), not shown here", shown)
    assert "**To render:** " in shown and "mug-00000" in shown
    # the whole plan has every row
    assert all(f"`mug-{i:05d}`" in whole for i in range(0, rows, 97))


def test_a_large_plan_without_rows_collapses_too(tmp_path: Path) -> None:
    shots = "".join(
        f"  - id: s{i:05d}\n    prompt: \"shot {i}: {'a long prompt ' * 10}\"\n    image: images/mug.png\n"
        for i in range(2500)
    )
    ws = workspace(tmp_path / "w", SMALL.split("shots:\n")[0] + "shots:\n" + shots)
    shown = plan(ws, "--format", "markdown")
    assert len(shown.encode()) <= COMMENT_LIMIT and shown.startswith(MARKER + "\n")
    assert "run `kling-render plan --format markdown --out-full plan.md` to see it whole" in shown
    small = workspace(tmp_path / "s", SMALL)
    text = plan(small, "--format", "markdown")
    assert text.startswith(MARKER + "\n") and "<details>" not in text and "`d`" in text  # small: whole


# -- item 6: plan --detailed-exitcode --------------------------------------------------------------

SMALL_LOCAL = SMALL.replace("provider: wavespeed", "provider: local")


@pytest.fixture(scope="module")
def rendered_locally(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL_LOCAL rendered once (four small animatics and the cut; the clip cache is inside the folder)."""
    ws = workspace(tmp_path_factory.mktemp("rendered") / "w", SMALL_LOCAL)
    ws.in_process = True
    with small_animatics():
        done = ws.cli("render", "--poll-interval", "0.05")
    assert done.returncode == 0, done.stderr
    return ws.root


def rendered_copy(tmp_path: Path, rendered_locally: Path) -> Workspace:
    root = tmp_path / "w"
    shutil.copytree(rendered_locally, root)
    return Workspace(root, base_env(KLING_RENDER_CACHE=str(root / "cache")))


def test_detailed_exitcode_says_nothing_changes_or_over_budget(tmp_path: Path, rendered_locally: Path) -> None:
    fresh = workspace(tmp_path / "fresh", SMALL_LOCAL)
    assert fresh.cli("plan", "--detailed-exitcode").returncode == 2  # everything to render (the real CLI)
    fresh.in_process = True
    assert fresh.cli("plan").returncode == 0  # without the flag: 0 as before
    ws = rendered_copy(tmp_path, rendered_locally)
    ws.in_process = True
    done = ws.cli("plan", "--detailed-exitcode", "--format", "markdown")
    assert done.returncode == 0, done.stdout + done.stderr  # all cached, nothing changed since the lock
    assert done.stdout.startswith(MARKER)
    ws.edit("shot b", "shot b, closer")
    assert ws.cli("plan", "--detailed-exitcode").returncode == 2  # a changed shot
    ws.edit("shot b, closer", "shot b")
    ws.edit("    image: images/mug-full.png\n", "    image: images/mug-full.png\n    trim: {start: 0.5}\n")
    assert ws.cli("plan", "--detailed-exitcode").returncode == 2  # a re-stitch only: the cut changes
    assert ws.cli("plan", "--detailed-exitcode", "--provider", "wavespeed", "--max-cost", "0.5").returncode == 3
    assert ws.cli("plan", "--detailed-exitcode", "--provider", "wavespeed", "--json").returncode == 2
    doc = json.loads(ws.cli("plan", "--detailed-exitcode", "--provider", "wavespeed", "--json").stdout)
    assert doc["over_budget"] is False


# -- item 18: the cost change compares like with like ------------------------------------------------


def test_a_local_preview_is_no_price_baseline(tmp_path: Path, rendered_locally: Path) -> None:
    # SMALL rendered by `render --provider local` (the same clips and lock as the module's render)
    ws = rendered_copy(tmp_path, rendered_locally)
    ws.in_process = True
    ws.edit("provider: local", "provider: wavespeed")
    done = ws.cli("render", "--provider", "local", "--poll-interval", "0.05")
    assert done.returncode == 0 and "4 cached; spent $0.0000" in done.stderr, done.stderr
    ws.edit("shot c", "shot c, pour slowly")  # one o3 shot changes: 4 s x 0.18 = $0.72
    md = plan(ws, "--format", "markdown")  # priced for wavespeed against a lock made by local
    line = next(x for x in md.splitlines() if x.startswith("**Project cost:**"))
    assert "change +$1" not in line and "lock: $0.0000" not in line, line
    assert "made by another provider (4 by local): no wavespeed cost to compare" in line, line
    assert "**To render:** 4 shot(s), **$1.7280**" in md  # 3 x $0.336 + $0.72
    # every amount is money with a $ (plan table, Markdown, status)
    for text in (md, plan(ws), ws.cli("status").stdout):
        for amount in re.findall(r"[+-]?\$?\d+\.\d{4}\b", text):
            assert "$" in amount, (amount, text)


def test_the_change_counts_only_this_providers_clips(tmp_path: Path, rendered_locally: Path) -> None:
    ws = rendered_copy(tmp_path, rendered_locally)
    ws.in_process = True
    lock = json.loads((ws.root / "project.lock").read_text())
    # as if a and b had been rendered by wavespeed at their price (a shared lock after a merge)
    for sid in ("a", "b"):
        lock["shots"][sid].update(provider="wavespeed", cost_usd=0.336)
    (ws.root / "project.lock").write_text(json.dumps(lock))
    ws.edit("provider: local", "provider: wavespeed")
    ws.edit("shot a", "shot a, wider")  # a: $0.336 now and in the lock
    md = plan(ws, "--format", "markdown")
    line = next(x for x in md.splitlines() if x.startswith("**Project cost:**"))
    assert "(lock, wavespeed clips: $0.6720; change +$0.0000; not compared: 2 by local)" in line, line


# -- item 12: storage errors in one line; the remote in the headers ----------------------------------


def remote_ws(tmp_path: Path, s3: S3Case, **env: str) -> Workspace:
    ws = workspace(tmp_path / "w", SMALL)
    clean = {k: v for k, v in base_env(KLING_RENDER_CACHE=str(tmp_path / "cache")).items() if not k.startswith("AWS_")}
    ws.env = {**clean, **env}
    return ws


@pytest.mark.parametrize("command", ["plan", "status"])
def test_a_missing_bucket_is_one_line_naming_the_variable(tmp_path: Path, s3: S3Case, command: str) -> None:
    env = {**s3.env(), "KLING_RENDER_REMOTE": "s3://no-such-bucket-kr/team"}
    ws = remote_ws(tmp_path, s3, **env)
    done = ws.cli(command)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "the bucket 'no-such-bucket-kr' does not exist" in line, line
    assert "KLING_RENDER_REMOTE" in line and "AWS_ENDPOINT_URL" in line
    assert "<" not in line and "?list-type" not in line and len(line) < 300, line


@pytest.mark.parametrize("command", ["plan", "status"])
def test_no_credentials_is_one_line_naming_the_variables(tmp_path: Path, s3: S3Case, command: str) -> None:
    """No AWS keys: the client asks the metadata service (not there off EC2) or sends the request
    unsigned, which a real S3 refuses (403 AccessDenied, played here by the proxy)."""
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("status", status=403))
        env = {k: v for k, v in s3.env(proxy.endpoint).items() if k not in keys}
        for metadata in ("http://127.0.0.1:9", None):  # unreachable, and this machine's own
            extra = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": metadata} if metadata else {}
            ws = remote_ws(tmp_path / str(bool(metadata)), s3, **env, **extra)
            done = ws.cli(command)
            assert done.returncode == 1
            [line] = done.stderr.strip().splitlines()
            assert "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line, line
            assert "169.254" not in line and "metadata" not in line.lower() and len(line) < 300, line
        # with keys the same refusal says what they may not do
        ws = remote_ws(tmp_path / "keys", s3, **s3.env(proxy.endpoint))
        [line] = ws.cli(command).stderr.strip().splitlines()
        assert "refused (access denied): the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) may not do" in line
        assert "<Error>" not in line


def test_an_unreachable_endpoint_names_aws_endpoint_url(tmp_path: Path, s3: S3Case) -> None:
    ws = remote_ws(tmp_path, s3, **s3.env("http://127.0.0.1:9"))
    done = ws.cli("plan", timeout=240)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "cannot reach http://127.0.0.1:9: check AWS_ENDPOINT_URL" in line, line


def test_plan_and_status_name_the_remote(tmp_path: Path, s3: S3Case) -> None:
    ws = remote_ws(tmp_path, s3, **s3.env())
    ws.in_process = True  # what the commands print, not a process's stderr
    assert plan(ws).startswith(f"small (wavespeed, remote {s3.url}): 4 shot(s)")
    assert f"remote `{s3.url}`" in plan(ws, "--format", "markdown")
    assert json.loads(plan(ws, "--json"))["remote"] == s3.url
    status = ws.cli("status")
    assert status.returncode == 0 and status.stdout.startswith(f"small (wavespeed, remote {s3.url}): 4 pending")
    assert json.loads(ws.cli("status", "--json").stdout)["remote"] == s3.url
    for secret in (S3_KEY_ID, S3_SECRET, S3_TOKEN):
        assert all(secret not in out for out in ws.outputs)
    bare = workspace(tmp_path / "bare", SMALL)
    assert plan(bare).startswith("small (wavespeed): 4 shot(s)")
