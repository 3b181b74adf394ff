"""One rule for "plain http stays on this machine", shared by the provider and the remote."""

from __future__ import annotations

import pytest

from kling_render.errors import UsageError
from kling_render.loopback import is_loopback_host
from kling_render.providers.transport import check_base_url
from kling_render.store.remote.config import check_endpoint

LOOPBACK = ["localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1", "[::1]"]
ELSEWHERE = [
    "10.0.0.5",
    "169.254.169.254",
    "127.0.0.1.nip.io",
    "api.localhost",
    "localhost.",
    "0.0.0.0",
    "::ffff:10.0.0.1",
]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_hosts_are_this_machine(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ELSEWHERE)
def test_other_hosts_are_not(host: str) -> None:
    assert not is_loopback_host(host)


@pytest.mark.parametrize("host", ["10.0.0.5", "api.localhost", "127.0.0.1.nip.io"])
def test_provider_and_remote_agree_on_plain_http(host: str) -> None:
    with pytest.raises(UsageError):
        check_base_url(f"http://{host}:8080", variable="WAVESPEED_BASE_URL")
    with pytest.raises(UsageError):
        check_endpoint(f"http://{host}:9000", "AWS_ENDPOINT_URL")
    assert check_base_url("http://127.0.0.1:8080", variable="WAVESPEED_BASE_URL")
    assert check_endpoint("http://127.0.0.1:9000", "AWS_ENDPOINT_URL") is True
