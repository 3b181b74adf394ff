"""The one masking function (masking.py) and its doors, in process: every form of every known
secret, files that stay valid JSON whatever the secret holds, the masked process streams, and the
task-id check that refuses an id holding a secret."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kling_render import env
from kling_render.fsutil import atomic_write_json, atomic_write_text
from kling_render.jobs import valid_task_id
from kling_render.masking import MASK, contains_secret, mask, mask_json, masked_streams
from kling_render.records.state import StateStore

KEY = 'wave-"key\\with/odd+chars é'  # a quote, a backslash, a slash, a plus, a space, a non-ASCII letter
FAL = "fal-key-0c9d8e7f6a5b"
AWS = {
    "AWS_SECRET_ACCESS_KEY": "aws/secret+KEY==",
    "AWS_SESSION_TOKEN": "tok-123456789",
    "AWS_ACCESS_KEY_ID": "AKIAX0000000",
}


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env.SECRET_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WAVESPEED_API_KEY", KEY)
    monkeypatch.setenv("FAL_KEY", FAL)
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "form",
    [
        KEY,
        KEY.upper(),
        json.dumps(KEY)[1:-1],  # JSON-escaped, ASCII
        json.dumps(KEY, ensure_ascii=False)[1:-1],
        "wave-%22key%5Cwith%2Fodd%2Bchars%20%C3%A9",  # URL-encoded
        "wave-&quot;key\\with/odd+chars é",  # HTML-escaped
        repr(KEY)[1:-1],  # as a message quotes it with !r
        ascii(KEY)[1:-1],
        FAL,
        *AWS.values(),
        "aws%2Fsecret%2BKEY%3D%3D",
    ],
)
def test_every_form_of_every_secret_is_masked(form: str) -> None:
    text = f"before {form} after"
    assert contains_secret(text)
    assert mask(text) == f"before {MASK} after"


def test_text_without_a_secret_is_left_alone_and_short_values_are_not_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "status: processing (task 0123abcd); nothing to hide"
    assert mask(text) is text and not contains_secret(text)
    monkeypatch.setenv("FAL_KEY", "ab")  # would garble every text (and digest) it occurs in
    assert mask("abba ab") == "abba ab"


def test_json_files_stay_valid_json_whatever_the_secret_holds(tmp_path: Path) -> None:
    doc = {"error": f"server said {KEY}", KEY: [f"url?k={FAL}", 3, None], "ok": "fine"}
    atomic_write_json(tmp_path / "a.json", doc)
    data = (tmp_path / "a.json").read_bytes()
    assert json.loads(data) == {"error": f"server said {MASK}", MASK: [f"url?k={MASK}", 3, None], "ok": "fine"}
    assert mask_json(doc)["ok"] == "fine"
    atomic_write_text(tmp_path / "b.html", f"<p>{KEY}</p><p>{FAL.upper()}</p>")
    assert (tmp_path / "b.html").read_text() == f"<p>{MASK}</p><p>{MASK}</p>"


@pytest.mark.parametrize("quoted", [False, True])
def test_a_json_document_is_masked_wherever_a_secret_hides_and_left_whole_without_one(
    monkeypatch: pytest.MonkeyPatch, quoted: bool
) -> None:
    """The one-pass check of a whole document (the lock and state are written after every step)
    finds a secret in any string, key or case, a secret JSON escapes (quote, backslash) too."""
    if not quoted:
        monkeypatch.setenv("WAVESPEED_API_KEY", "wave-plain-key-0123")
    secret = KEY if quoted else "wave-plain-key-0123"
    clean = {"shots": {f"s{i}": {"prompt": f"take {i}", "n": i, "ok": True, "x": None} for i in range(50)}}
    assert mask_json(clean) is clean  # nothing to mask: the very same document
    for doc, where in [
        ({"a": {"b": [1, {"c": f"said {secret.upper()}!"}]}}, ("a", "b", 1, "c")),
        ({"a": {f"k-{secret}": 1}}, ("a",)),
        ({"a": [f"{FAL}"]}, ("a", 0)),
    ]:
        masked = mask_json(doc)
        text = json.dumps(masked, ensure_ascii=False)
        assert secret not in text and secret.upper() not in text and FAL not in text
        assert MASK in text, where
    assert mask_json({"p": Path("/tmp/x")})["p"] == Path("/tmp/x")  # not JSON: still handled, string by string


def test_the_state_file_masks_a_servers_text_and_stays_readable(tmp_path: Path) -> None:
    with StateStore.for_project(tmp_path / "p.yaml", "wavespeed") as state:
        state.ensure("alpha", "ab" * 32)
        state.note("alpha", error=f"poll failed: invalid API key {KEY!r}")
        path = state.path
    text = path.read_text()
    assert KEY not in text and json.dumps(KEY)[1:-1] not in text
    with StateStore.for_project(tmp_path / "p.yaml", "wavespeed") as state:
        record = state.get("alpha")
        assert record is not None and record.error == f"poll failed: invalid API key '{MASK}'"


def test_a_task_id_holding_a_secret_is_refused() -> None:
    assert valid_task_id("task-0123456789abcdef")
    assert not valid_task_id(f"t-{FAL}") and not valid_task_id(f"x{FAL.upper()}y")
    assert not valid_task_id("AKIAX0000000")


def test_the_masked_streams_mask_click_and_print_and_offer_no_way_around() -> None:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        with masked_streams():
            click.echo(f"echo {KEY}")
            click.echo(f"err {FAL}", err=True)
            print(f"print {AWS['AWS_SESSION_TOKEN']}")
            assert not hasattr(sys.stdout, "buffer")
            with pytest.raises(TypeError):
                sys.stdout.write(b"bytes")  # type: ignore[arg-type]
        assert sys.stdout is out and sys.stderr is err
    finally:
        sys.stdout, sys.stderr = saved
    assert out.getvalue() == f"echo {MASK}\nprint {MASK}\n" and err.getvalue() == f"err {MASK}\n"


def test_every_command_prints_through_the_masked_streams(tmp_path: Path) -> None:
    """An error whose text holds a secret (a project file naming it, here) is printed masked."""
    project = tmp_path / "p.yaml"
    project.write_text(f"version: 1\nname: p\nprovider: {FAL}\nshots: []\n")
    from kling_render.cli import cli

    result = CliRunner().invoke(cli, ["validate", str(project)])
    assert result.exit_code == 2 and FAL not in result.output and MASK in result.output, result.output
