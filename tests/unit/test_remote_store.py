"""The remote's object-store seam and its clips, against a real S3 API (moto on 127.0.0.1) and file://."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import S3_KEY_ID, S3_SECRET, S3_TOKEN, S3Case
from remote_kit import clip_file, fast_policy, open_env_remote, run
from s3_proxy import Rule, S3Proxy

from kling_render.errors import FFmpegError, RemoteError, RemoteIntegrityError, RemoteTransientError, UsageError
from kling_render.fsutil import sha256_file
from kling_render.media.image_check import CheckedImage
from kling_render.store.cache import ClipCache, ClipMeta
from kling_render.store.remote.clips import PushConflict, Pushed, blob_path, record_path
from kling_render.store.remote.config import parse_remote_url, s3_settings
from kling_render.store.remote.connect import remote_for, resolve_remote_url
from kling_render.store.remote.segments import RemoteSegments
from kling_render.store.remote.store import Lost, Written

SECRETS = (S3_KEY_ID, S3_SECRET, S3_TOKEN)
KEY = "ab" * 32
PROVIDER = "wavespeed"
META = ClipMeta(5.0, "kwaivgi/kling-v3.0-std/image-to-video", "task-1", {"width": 1920})


def measured(path: Path) -> CheckedImage:
    """A check for these byte-level tests (their clips are random bytes, so not a clip's structural
    check): what it "measures" depends on the file, so a test can tell the cache took the check's
    figures, not the record's."""
    return CheckedImage(sha256_file(path), {"measured": sha256_file(path)[:12]}, 4.25)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a credential leaked into: {text[:200]}"


# -- URLs and settings (no network) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://my-bucket", "s3://my-bucket"),
        ("s3://my-bucket/team/project/", "s3://my-bucket/team/project"),
        ("S3://my.bucket//a//b", "s3://my.bucket/a/b"),
        ("gs://bucket_1/x", "gs://bucket_1/x"),
        ("az://container/p", "az://container/p"),
        ("file:///srv/kling/remote", "file:///srv/kling/remote"),
        ("file://localhost/srv/x", "file:///srv/x"),
    ],
)
def test_remote_urls_that_parse(text: str, expected: str) -> None:
    assert str(parse_remote_url(text)) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("bucket/prefix", "not a remote URL"),
        ("http://bucket/prefix", "not a remote URL"),
        ("s3://", "not a valid bucket name"),
        ("s3://Bad_Bucket", "not a valid bucket name"),
        ("s3://b", "not a valid bucket name"),
        ("s3://bucket/a/../b", "may only use"),
        ("s3://bucket/a b", "may only use"),
        ("s3://bucket/p?versionId=1", "no ?query"),
        ("file://relative/dir", "not a host"),
        ("file:///srv/../etc", "'.' and '..'"),
    ],
)
def test_remote_urls_that_do_not(text: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_remote_url(text)
    assert says in str(info.value)


def test_a_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError) as info:
        parse_remote_url(f"s3://{S3_KEY_ID}:{S3_SECRET}@bucket/prefix")
    assert "must not carry credentials" in str(info.value)
    assert_no_secret(str(info.value))


def test_the_environment_wins_over_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLING_RENDER_REMOTE", raising=False)
    assert resolve_remote_url(None) is None
    assert str(resolve_remote_url("s3://from-project/p", "p.yaml")) == "s3://from-project/p"
    monkeypatch.setenv("KLING_RENDER_REMOTE", "s3://from-env/q")
    assert str(resolve_remote_url("s3://from-project/p", "p.yaml")) == "s3://from-env/q"
    monkeypatch.setenv("KLING_RENDER_REMOTE", "s3:/oops")
    with pytest.raises(UsageError, match=r"^KLING_RENDER_REMOTE: ") as info:
        resolve_remote_url(None)
    assert info.value.exit_code == 2
    monkeypatch.delenv("KLING_RENDER_REMOTE")
    with pytest.raises(UsageError, match=r"^p\.yaml: remote: "):
        resolve_remote_url("gopher://x", "p.yaml")


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"])
@pytest.mark.parametrize(
    "endpoint", ["http://example.invalid:9000", "http://10.0.0.5", "http://169.254.169.254", "http://127.0.0.1.nip.io"]
)
def test_plain_http_to_another_machine_is_refused_before_any_request(
    variable: str, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    with pytest.raises(UsageError) as info:
        remote_for("s3://bucket/prefix")
    assert info.value.exit_code == 2
    assert variable in str(info.value) and "plain http is allowed only to this machine" in str(info.value)
    assert_no_secret(str(info.value))


@pytest.mark.parametrize(
    ("endpoint", "allow_http"),
    [
        ("http://127.0.0.1:9000", True),
        ("http://localhost:9000", True),
        ("http://[::1]:9000", True),
        ("http://127.8.9.10", True),
        ("https://s3.example.com", False),
        ("https://minio.internal:9000/", False),
    ],
)
def test_https_anywhere_and_http_to_this_machine_are_allowed(endpoint: str, allow_http: bool) -> None:
    settings = s3_settings({"AWS_ENDPOINT_URL": endpoint})
    assert settings.allow_http is allow_http
    assert settings.endpoint == endpoint.rstrip("/")


def test_endpoint_with_userinfo_and_half_credentials_are_usage_errors() -> None:
    with pytest.raises(UsageError) as info:
        s3_settings({"AWS_ENDPOINT_URL": f"https://{S3_KEY_ID}:{S3_SECRET}@s3.example.com"})
    assert_no_secret(str(info.value))
    with pytest.raises(UsageError, match="AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"):
        s3_settings({"AWS_ACCESS_KEY_ID": S3_KEY_ID})
    with pytest.raises(UsageError, match="AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"):
        s3_settings({"AWS_SECRET_ACCESS_KEY": S3_SECRET})


def test_explicit_allow_http_overrides_aws_allow_http(s3: S3Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """obstore reads AWS_* itself; AWS_ALLOW_HTTP=true in the environment must not open plain http
    that the loopback check did not allow: the explicit client option wins."""
    from kling_render.store.remote.config import S3Settings
    from kling_render.store.remote.store import open_store

    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    refused = S3Settings(endpoint=s3.server.endpoint, allow_http=False, access_key_id="k", secret_access_key="s")
    store = open_store(parse_remote_url(s3.url), refused, policy=fast_policy(1))
    with pytest.raises(RemoteError, match="the endpoint URL is not usable") as info:
        run(store.read("x.json"))
    assert not isinstance(info.value, RemoteTransientError)
    allowed = S3Settings(endpoint=s3.server.endpoint, allow_http=True, access_key_id="k", secret_access_key="s")
    assert run(open_store(parse_remote_url(s3.url), allowed, policy=fast_policy(1)).read("x.json")) is None


# -- conditional writes against moto ------------------------------------------------------------


def test_create_only_write_and_its_lost_race(s3: S3Case) -> None:
    store = open_env_remote().store
    first = run(store.write("x/one.json", b'{"n": 1}'))
    assert isinstance(first, Written) and first.etag
    second = run(store.write("x/one.json", b'{"n": 2}'))
    assert isinstance(second, Lost)
    assert second.current is not None and second.current.data == b'{"n": 1}'
    assert s3.server.get_raw(s3.bucket, f"{s3.prefix}/x/one.json") == b'{"n": 1}'


def test_one_shard_holds_a_segments_claim_and_a_remote_that_cannot_say_lets_it_encode(s3: S3Case) -> None:
    """Shards at once split the segments by a create-only claim (store/remote/segments.py); the
    claim is not a segment record, and a remote that cannot answer means "encode it here"."""
    from kling_render.store.remote.segments import SegmentRemote, claim_path, record_path

    remote = open_env_remote()
    mine, theirs = "ab" * 32, "ef" * 32
    here = SegmentRemote(remote.segments)
    assert here.claim(mine) is True
    assert here.claim(mine) is True  # this process's own claim (a segment it failed is tried again)
    raw = json.loads(s3.server.get_raw(s3.bucket, f"{s3.prefix}/{claim_path(mine)}"))
    assert set(raw) == {"host", "pid", "token", "since"}
    other = {**raw, "pid": raw["pid"] + 1, "token": "0" * 32}  # another shard's process
    run(remote.store.write(claim_path(theirs), json.dumps(other).encode()))
    assert here.claim(theirs) is False
    assert run(remote.store.read(record_path(mine))) is None  # no segment record made by a claim
    dead = SegmentRemote(remote_for_unreachable())
    assert dead.claim("cd" * 32) is True and "not claimed" in dead.problems[0]


def remote_for_unreachable() -> RemoteSegments:
    from kling_render.store.remote.config import S3Settings
    from kling_render.store.remote.store import open_store

    closed = S3Settings(endpoint="http://127.0.0.1:9", allow_http=True, access_key_id="k", secret_access_key="s")
    return RemoteSegments(open_store(parse_remote_url("s3://bucket/p"), closed, policy=fast_policy(1)))


def test_compare_and_swap_and_its_lost_race(s3: S3Case) -> None:
    store = open_env_remote().store
    created = run(store.write("c.json", b"v1"))
    assert isinstance(created, Written)
    updated = run(store.write("c.json", b"v2", expect_etag=created.etag))
    assert isinstance(updated, Written) and updated.etag != created.etag
    stale = run(store.write("c.json", b"v3", expect_etag=created.etag))
    assert isinstance(stale, Lost) and stale.current is not None and stale.current.data == b"v2"
    gone = run(store.write("never-created.json", b"v1", expect_etag=created.etag))
    assert gone == Lost(None)


def test_409_is_a_lost_race_like_412(s3: S3Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some S3-compatible stores answer a conditional write 409 Conflict: a proxy in front of moto
    turns moto's real 412 into a real 409 on the wire."""
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("rewrite-412-to-409", method="PUT"))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        store = open_env_remote().store
        created = run(store.write("claims/k", b"first"))
        assert isinstance(created, Written)
        lost_create = run(store.write("claims/k", b"second"))
        assert isinstance(lost_create, Lost) and lost_create.current is not None
        assert lost_create.current.data == b"first"
        updated = run(store.write("claims/k", b"third", expect_etag=created.etag))
        assert isinstance(updated, Written)
        lost_cas = run(store.write("claims/k", b"fourth", expect_etag=created.etag))
        assert isinstance(lost_cas, Lost) and lost_cas.current is not None and lost_cas.current.data == b"third"
        assert proxy.hits("rewrite-412-to-409") == 2
        assert [status for method, _, status in proxy.requests if method == "PUT"].count(409) == 2


def test_a_write_whose_answer_was_lost_is_found_to_be_ours(s3: S3Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The create lands but its answer is a 503; the retry is answered 412. Reading back shows our
    own bytes: the write is won, not lost (a run must not think another machine holds its claim)."""
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("land-then-503", method="PUT", path_contains="/mine.json", count=1))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        store = open_env_remote().store
        outcome = run(store.write("mine.json", b"ours"))
        assert isinstance(outcome, Written)
        assert proxy.hits("land-then-503") == 1
        puts = [status for method, path, status in proxy.requests if method == "PUT" and "mine.json" in path]
        assert puts == [503, 412]


def test_transient_errors_are_retried_by_the_one_policy(s3: S3Case, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_env_remote(attempts=4).store
    assert isinstance(run(store.write("t.json", b"x")), Written)
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("status", method="GET", status=503, count=2))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        store = open_env_remote(attempts=4).store
        stored = run(store.read("t.json"))
        assert stored is not None and stored.data == b"x"
        assert [s for m, _, s in proxy.requests if m == "GET"] == [503, 503, 200]  # obstore's own retries are off
        proxy.add(Rule("status", method="GET", status=500))
        with pytest.raises(RemoteTransientError) as info:
            run(store.read("t.json"))
        assert str(info.value).startswith(f"reading t.json on the remote {s3.url} failed: ")
        assert "Debug source" not in str(info.value) and "\n" not in str(info.value)
        assert [s for m, _, s in proxy.requests if m == "GET"][3:] == [500] * 4


def test_access_denied_is_one_clear_error(s3: S3Case, monkeypatch: pytest.MonkeyPatch) -> None:
    with S3Proxy(s3.server.endpoint) as proxy:
        proxy.add(Rule("status", status=403))
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        store = open_env_remote().store
        with pytest.raises(RemoteError) as info:
            run(store.write("claims/x", b"{}"))
        assert not isinstance(info.value, RemoteTransientError)
        assert "access denied" in str(info.value) and "AWS_SECRET_ACCESS_KEY" in str(info.value)
        assert len(proxy.requests) == 1  # not retried
        assert_no_secret(str(info.value))


def test_an_unreachable_endpoint_is_transient_then_one_error(s3: S3Case, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    store = open_env_remote(attempts=3).store
    with pytest.raises(RemoteTransientError) as info:
        run(store.read("anything.json"))
    assert f"on the remote {s3.url}" in str(info.value)
    assert_no_secret(str(info.value))


# -- clips ---------------------------------------------------------------------------------------


def _push(remote_src: Path, size: int = 300_000, seed: int = 1) -> tuple[Path, str]:
    clip = clip_file(remote_src, size, seed)
    return clip, sha256_file(clip)


def test_push_then_pull_on_a_machine_with_an_empty_cache(s3: S3Case, tmp_path: Path) -> None:
    """A 6 MB clip goes up in parts (multipart) and comes down byte-identical and checked."""
    remote = open_env_remote()
    src, digest = _push(tmp_path / "a" / "clip.mp4", size=6_300_000)
    pushed = run(remote.clips.push(PROVIDER, KEY, src, META))
    assert isinstance(pushed, Pushed) and pushed.created and pushed.clip.sha256 == digest
    keys = set(s3.server.list_raw(s3.bucket))
    assert keys == {f"{s3.prefix}/{record_path(PROVIDER, KEY)}", f"{s3.prefix}/{blob_path(digest)}"}
    record = json.loads(s3.server.get_raw(s3.bucket, f"{s3.prefix}/{record_path(PROVIDER, KEY)}"))
    assert record["sha256"] == digest and record["size"] == 6_300_000 and record["task_id"] == "task-1"

    other = ClipCache(tmp_path / "machine-b" / "cache")
    entry = run(open_env_remote("run-b").clips.pull(PROVIDER, KEY, other, verify=measured))
    assert entry is not None and entry.sha256 == digest
    assert entry.path.read_bytes() == src.read_bytes()
    # Duration and stream headers are the check's, measured on the clip; never the record's (5.0, 1920).
    assert (entry.duration, entry.model, entry.task_id) == (4.25, META.model, "task-1")
    used = other.use(PROVIDER, KEY)  # the sidecar's headers come with a verified use (cache.py)
    assert used is not None and used.media == {"measured": digest[:12]}
    assert other.verify(PROVIDER, KEY)
    assert list(other.tmp_dir.iterdir()) == []
    assert run(remote.clips.keys(PROVIDER)) == {KEY}
    assert run(remote.clips.pull(PROVIDER, "cd" * 32, other, verify=measured)) is None


def test_pushing_the_same_clip_again_is_success_and_a_different_one_loses(s3: S3Case, tmp_path: Path) -> None:
    remote = open_env_remote()
    src, digest = _push(tmp_path / "clip.mp4", seed=1)
    first = run(remote.clips.push(PROVIDER, KEY, src, META))
    assert isinstance(first, Pushed) and first.created
    again = run(open_env_remote("run-b").clips.push(PROVIDER, KEY, src, META))
    assert isinstance(again, Pushed) and not again.created and again.clip.sha256 == digest
    blob = f"{s3.prefix}/{blob_path(digest)}"
    s3.server.delete_raw(s3.bucket, blob)  # lost behind our back: pushing the same clip puts it back
    again = run(open_env_remote("run-b").clips.push(PROVIDER, KEY, src, META))
    assert isinstance(again, Pushed) and not again.created
    assert s3.server.get_raw(s3.bucket, blob) == src.read_bytes()
    other_src, other_digest = _push(tmp_path / "other.mp4", seed=2)
    conflict = run(open_env_remote("run-c").clips.push(PROVIDER, KEY, other_src, META))
    assert isinstance(conflict, PushConflict) and conflict.existing.sha256 == digest != other_digest
    record = json.loads(s3.server.get_raw(s3.bucket, f"{s3.prefix}/{record_path(PROVIDER, KEY)}"))
    assert record["sha256"] == digest  # the first clip stays


@pytest.mark.parametrize("damage", ["same-size", "longer", "shorter", "missing"])
def test_a_tampered_clip_is_never_accepted(s3: S3Case, tmp_path: Path, damage: str) -> None:
    remote = open_env_remote()
    src, digest = _push(tmp_path / "clip.mp4", size=200_000)
    assert isinstance(run(remote.clips.push(PROVIDER, KEY, src, META)), Pushed)
    blob = f"{s3.prefix}/{blob_path(digest)}"
    good = src.read_bytes()
    if damage == "same-size":
        s3.server.put_raw(s3.bucket, blob, good[:1000] + bytes(b ^ 0xFF for b in good[1000:1010]) + good[1010:])
    elif damage == "longer":
        s3.server.put_raw(s3.bucket, blob, good + b"\0")
    elif damage == "shorter":
        s3.server.put_raw(s3.bucket, blob, good[:-1])
    else:
        s3.server.delete_raw(s3.bucket, blob)
    cache = ClipCache(tmp_path / "b" / "cache")
    with pytest.raises(RemoteIntegrityError) as info:
        run(open_env_remote("run-b").clips.pull(PROVIDER, KEY, cache, verify=measured))
    assert blob_path(digest) in str(info.value)
    assert cache.get(PROVIDER, KEY) is None
    assert not cache.tmp_dir.exists() or list(cache.tmp_dir.iterdir()) == []


def test_a_damaged_record_is_an_integrity_error(s3: S3Case, tmp_path: Path) -> None:
    s3.server.put_raw(s3.bucket, f"{s3.prefix}/{record_path(PROVIDER, KEY)}", b'{"key": "nope"')
    with pytest.raises(RemoteIntegrityError, match="damaged"):
        run(open_env_remote().clips.get(PROVIDER, KEY))


def test_file_remote_clips_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_RENDER_REMOTE", f"file://{tmp_path / 'shared'}")
    remote = open_env_remote()
    src, digest = _push(tmp_path / "clip.mp4", size=5_500_000)
    assert isinstance(run(remote.clips.push(PROVIDER, KEY, src, META)), Pushed)
    assert (tmp_path / "shared" / record_path(PROVIDER, KEY)).is_file()
    assert (tmp_path / "shared" / blob_path(digest)).read_bytes() == src.read_bytes()
    cache = ClipCache(tmp_path / "b" / "cache")
    entry = run(open_env_remote("run-b").clips.pull(PROVIDER, KEY, cache, verify=measured))
    assert entry is not None and entry.path.read_bytes() == src.read_bytes()
    (tmp_path / "shared" / blob_path(digest)).write_bytes(b"x" * 5_500_000)
    with pytest.raises(RemoteIntegrityError):
        run(open_env_remote("run-c").clips.pull(PROVIDER, KEY, ClipCache(tmp_path / "c" / "cache"), verify=measured))


def test_file_remote_create_only_and_compare_and_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLING_RENDER_REMOTE", f"file://{tmp_path / 'shared'}")
    store = open_env_remote().store
    first = run(store.write("claims/k", b"one"))
    assert isinstance(first, Written)
    lost = run(store.write("claims/k", b"two"))
    assert isinstance(lost, Lost) and lost.current is not None and lost.current.data == b"one"
    updated = run(store.write("claims/k", b"three", expect_etag=first.etag))
    assert isinstance(updated, Written) and updated.etag != first.etag
    stale = run(store.write("claims/k", b"four", expect_etag=first.etag))
    assert isinstance(stale, Lost) and stale.current is not None and stale.current.data == b"three"
    assert run(store.list_paths("claims/")) == ["claims/k"]
    assert run(store.list_paths("nothing-here/")) == []


# -- credentials ---------------------------------------------------------------------------------


def test_credentials_never_appear_in_messages_reprs_logs_or_objects(
    s3: S3Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    remote = open_env_remote()
    texts += [repr(remote), repr(remote.store), str(remote.url), repr(remote.claims.owner)]
    texts += [repr(s3_settings(dict(s3.env()))), str(s3_settings(dict(s3.env())))]
    src, _ = _push(tmp_path / "clip.mp4")
    run(remote.clips.push(PROVIDER, KEY, src, META))
    run(remote.claims.acquire(KEY, provider=PROVIDER, model="m"))
    with S3Proxy(s3.server.endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        for rule in (Rule("status", status=403, count=1), Rule("status", status=503)):
            proxy.add(rule)
            with pytest.raises(RemoteError) as info:
                run(open_env_remote().store.read("claims/x"))
            texts.append(str(info.value))
            texts.append(repr(info.value))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://192.0.2.1:9000")
    with pytest.raises(UsageError) as usage:
        open_env_remote()
    texts.append(str(usage.value))
    texts += [record.getMessage() for record in caplog.records]
    assert any("retry" in t for t in texts)  # the retry log lines were captured and checked too
    for key in s3.server.list_raw(s3.bucket):
        if not key.endswith(".mp4"):
            texts.append(s3.server.get_raw(s3.bucket, key).decode("utf-8"))
    assert_no_secret(*texts)


# -- remote: in the project ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"s3://{S3_KEY_ID}:{S3_SECRET}@bucket/p", "must not carry credentials"),
        (f"s3://bucket/p?X-Amz-Security-Token={S3_TOKEN}", "no ?query"),
        ("s3://Bad_Bucket/p", "is not a valid bucket name"),
        ("https://bucket/p", "is not a remote URL"),
        ("''", "must not be empty"),
    ],
)
def test_a_bad_remote_in_the_project_is_a_located_error_that_never_echoes_a_credential(
    tmp_path: Path, value: str, says: str
) -> None:
    from e2e_cli import SMALL_PROJECT, base_env, small_workspace

    text = SMALL_PROJECT.replace("provider: wavespeed\n", f"provider: wavespeed\nremote: {value}\n")
    ws = small_workspace(tmp_path / "p", base_env(), text)
    done = ws.cli("validate", str(ws.project))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "project.yaml:4: remote: " in done.stderr and says in done.stderr
    assert_no_secret(done.stdout, done.stderr)


def test_the_project_remote_is_loaded(tmp_path: Path) -> None:
    from e2e_cli import SMALL_PROJECT, base_env, small_workspace

    from kling_render.project.loader import load_project

    text = SMALL_PROJECT.replace("provider: wavespeed\n", "provider: wavespeed\nremote: s3://team-bucket/clips\n")
    ws = small_workspace(tmp_path / "p", base_env(), text)
    assert load_project(ws.project).remote == "s3://team-bucket/clips"
    assert str(resolve_remote_url(load_project(ws.project).remote)) == "s3://team-bucket/clips"


def test_pull_runs_the_callers_check_before_the_cache_takes_the_clip(s3: S3Case, tmp_path: Path) -> None:
    """The pusher checked the clip; a puller checks it again, as a download (SPEC §6): a blob with
    the right digest that is not a usable clip is an integrity error, and nothing is kept."""
    remote = open_env_remote()
    src, digest = _push(tmp_path / "clip.mp4")
    assert isinstance(run(remote.clips.push(PROVIDER, KEY, src, META)), Pushed)
    cache = ClipCache(tmp_path / "b" / "cache")
    seen: list[str] = []

    def refuse(path: Path) -> CheckedImage:
        seen.append(sha256_file(path))
        raise FFmpegError("checking the clip", "Invalid data found when processing input")

    with pytest.raises(RemoteIntegrityError, match="not a usable clip"):
        run(remote.clips.pull(PROVIDER, KEY, cache, verify=refuse))
    assert seen == [digest] and cache.get(PROVIDER, KEY) is None and list(cache.tmp_dir.iterdir()) == []
    entry = run(remote.clips.pull(PROVIDER, KEY, cache, verify=measured))
    assert entry is not None and entry.sha256 == digest
