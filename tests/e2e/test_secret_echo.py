"""A server that echoes a secret (issue 23, item 2): the API key in a task id, a task status, an error
message, an output URL, an answer's message; an object store that echoes a credential in an error.
Through the real CLI (--json, plain, --verbose, status, plan, report) against the stand-in WaveSpeed
(a process) and a real S3 API (moto): no known secret reaches any output, any file under the project
and its cache, or any object on the remote; a task id holding the key is refused (the submit is
``unknown`` and reconciled), and each echo is seen masked, so no test passes for want of an echo."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import S3_KEY_ID, S3_SECRET, S3_TOKEN, S3Case
from e2e_cli import SECRET
from e2e_fake import FakeProcess
from s3_proxy import Rule, S3Proxy
from teams_kit import MODEL_PATH, Checkout, checkouts, paid_by_shot, team_env

from kling_render.masking import MASK

SECRETS = (SECRET, S3_SECRET, S3_TOKEN, S3_KEY_ID)
POLL = "/api/v3/predictions/"


pytestmark = pytest.mark.stand_in(latency=0.4)


@pytest.fixture
def fake(fake_process: FakeProcess) -> FakeProcess:
    """The stand-in as its own process (conftest's ``fake_process``, options from this module's marker)."""
    return fake_process


# name -> (faults to add: kind, path prefix, options), tasks paid by the first render, its exit code.
# An output URL is never printed or stored, so its echo is never seen masked; every other one is.
SCENARIOS: dict[str, tuple[list[tuple[str, str, dict[str, Any]]], Counter[str], int]] = {
    "task id": ([("bad_id", MODEL_PATH, {"task_id": f"t-{SECRET}"})], Counter(s000=1), 0),
    "status": ([("poll_status", POLL, {"count": 3, "method": "GET", "status": "processing as {token}"})],
               Counter(s000=1), 0),
    "error": ([("fail", MODEL_PATH, {"code": 5000, "error": f"internal error for key {SECRET}"})],
              Counter(s000=2), 0),
    "url": ([("output_url", MODEL_PATH, {"url": "{base}/outputs/{id}.mp4?signature=" + SECRET})],
            Counter(s000=1), 0),
    "message": ([("404", POLL, {"method": "GET", "message": f"no task for Bearer {SECRET}"}),
                 ("400", MODEL_PATH, {"message": f"key {SECRET} may not use this model", "body_contains": "s001"})],
                Counter(s000=1, s001=0), 1),
}  # fmt: skip


def everything(checkout: Checkout) -> None:
    """Every command that prints or writes, in every output form."""
    checkout.finish(checkout.start_render("--no-stitch"))
    checkout.render(verbose=True)
    checkout.render()
    checkout.cli("render", str(checkout.project), "--json", "--poll-interval", "0.05")
    for args in (["status", "--json"], ["status"], ["plan"], ["plan", "--json"], ["report"]):
        checkout.cli(args[0], str(checkout.project), *args[1:], verbose=True)


def assert_masked_everywhere(checkout: Checkout, s3: S3Case) -> str:
    """No secret in any file, output or remote object; all the text there, for further checks."""
    for secret in SECRETS:
        for form in (secret, secret.lower(), secret.upper()):  # a server may change its case
            checkout.assert_no_secret(form)
    texts = list(checkout.outputs)
    for path in checkout.root.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    for name in s3.server.list_raw(s3.bucket):
        data = s3.server.get_raw(s3.bucket, name)
        for secret in SECRETS:
            assert secret.lower().encode() not in data.lower(), f"{secret[:6]}... leaked to the remote's {name}"
        texts.append(data.decode("utf-8", "replace"))
    return "\n".join(texts)


@pytest.mark.parametrize("where", list(SCENARIOS))
def test_a_key_echoed_by_the_provider_is_masked_everywhere(
    tmp_path: Path, fake: FakeProcess, s3: S3Case, where: str
) -> None:
    faults, paid, first_rc = SCENARIOS[where]
    [checkout] = checkouts(tmp_path, team_env(fake, s3.env()), 1, shots=2 if where == "message" else 1)
    for kind, prefix, options in faults:
        fake.fault(kind, prefix, **options)
    rc, _, err = checkout.finish(checkout.start_render("--no-stitch"))
    assert rc == first_rc, err
    assert paid_by_shot(fake) == +paid, paid_by_shot(fake)  # (unary +: without the zero counts)
    everything(checkout)
    text = assert_masked_everywhere(checkout, s3)
    if where == "url":
        assert [r for r in fake.requests() if r["path"].startswith("/outputs/")]  # the key's URL was used
    else:
        assert MASK in text, "the echo never reached a door: nothing was masked"
    assert checkout.statuses()["s000"] == "done"
    if where == "task id":
        assert f"t-{MASK}" in text and "not a usable id" in text  # refused, then found in the task list
        assert "reconciled" in text
    if where == "message":
        assert f"key {MASK} may not use this model" in text and f"Bearer {MASK}" in text


def test_a_credential_echoed_by_the_object_store_is_masked(tmp_path: Path, fake: FakeProcess, s3: S3Case) -> None:
    echo = f"<Error><Code>InvalidArgument</Code><Message>bad credential {S3_SECRET} / {S3_TOKEN}</Message></Error>"
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("status", status=400, body=echo.encode()))
        [checkout] = checkouts(tmp_path, team_env(fake, s3.env(proxy.endpoint)), 1, shots=1)
        for command in ("plan", "status", "render", "stitch"):
            done = checkout.cli(command, str(checkout.project), verbose=command == "render")
            assert done.returncode == 1, (command, done.stderr)
            assert f"bad credential {MASK} / {MASK}" in done.stderr, done.stderr
    assert_masked_everywhere(checkout, s3)
    assert len(fake.submits()) == 0


def test_a_key_given_to_a_provider_directly_is_masked_too(tmp_path: Path) -> None:
    """The key need not come from the environment: a provider built with one registers it."""
    from kling_render.masking import mask
    from kling_render.providers.wavespeed.client import WaveSpeedProvider

    key = "direct-key-3f9a1c77e0/+"
    assert mask(f"echo {key}") == f"echo {key}"
    WaveSpeedProvider(key, "http://127.0.0.1:9", tmp_path)
    assert mask(f"echo {key} in a URL: ?k=direct-key-3f9a1c77e0%2F%2B") == f"echo {MASK} in a URL: ?k={MASK}"
