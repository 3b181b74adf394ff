"""The paid POST of a provider's submit, sent once, and what a failure to get its answer means for
money (SPEC §5): a request that never reached the server created nothing and may be sent again (as a
refusal); one that was sent and lost its answer may have created a paid task, and is never sent
again blindly (the step becomes ``unknown`` and is reconciled). Each provider reads the answer's
meaning itself (WaveSpeed's envelope codes, fal's statuses)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from kling_render.errors import SubmitRefusedError, SubmitUncertainError
from kling_render.providers import transport as net
from kling_render.providers.download import describe

__all__ = ["NOT_SENT", "post_paid"]

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # nothing reached the server


async def post_paid(
    client: httpx.AsyncClient,
    url: str,
    limits: net.Limits,
    *,
    headers: dict[str, str],
    body: Mapping[str, Any],
    what: str,
    redact: net.Redactor,
    thing: str,
) -> net.Answer:
    """One POST of a submit body; its answer, whatever its status. SubmitRefusedError when nothing
    was sent, SubmitUncertainError when a paid ``thing`` (task, request) may exist unanswered."""
    try:
        return await net.request(client, "POST", url, limits, headers=headers, json_body=body)
    except NOT_SENT as exc:  # nothing reached the server: as safe to repeat as a refusal
        raise SubmitRefusedError(redact(f"{what}: cannot connect ({describe(exc)})")) from exc
    except (httpx.HTTPError, net.TransferError) as exc:
        raise SubmitUncertainError(
            redact(f"{what}: no usable answer ({describe(exc)}); a paid {thing} may exist")
        ) from exc
