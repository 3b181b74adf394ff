"""The exception tree. The core raises these; only ``cli.py`` turns them into exit codes.

    KlingRenderError                 exit 1 unless said otherwise
    ├── UsageError                   exit 2: bad command-line arguments
    ├── ProjectError                 exit 2: the project file is invalid (carries every Issue)
    ├── BudgetError                  exit 3: the plan or the spend exceeds the budget
    ├── StateError                   state/lock/cache file trouble
    │   └── LockedError              another run holds the project's lock
    ├── ProviderError                the provider failed in a way the runner reports
    │   ├── AccountError             the account cannot run tasks (402, balance): stop the run
    │   │   └── AuthError            exit 2: missing or rejected API key (401/403)
    │   ├── TransientError           429/5xx/dropped connection on an idempotent call: safe to retry
    │   │   └── SubmitRefusedError   submit answered 429, or was never sent: nothing was created, retry
    │   ├── SubmitRejectedError      submit answered 4xx (or an envelope with a 4xx code): nothing created
    │   ├── SubmitUncertainError     submit got 5xx, no answer, or no usable task id: a task may exist
    │   ├── TaskFailedError          the task ended failed/cancelled/timeout/deleted
    │   ├── TaskGoneError            poll answered 404: the provider no longer knows the task
    │   └── DownloadError            the output could not be fetched or is not a valid clip
    │       ├── OutputGoneError      the output URL answered 404/410 (expired or never there)
    │       └── InvalidClipError     the bytes are not a usable clip (the structural check says why)
    ├── RemoteError                  the shared remote (object store) failed or refused access
    │   ├── RemoteTransientError     5xx, timeouts, dropped connections: retried by the one policy first
    │   ├── RemoteIntegrityError     an object on the remote does not match its recorded sha256/size
    │   └── RemoteVersionError       a claim or record written by a newer kling-render: never rewritten
    ├── FFmpegError                  an ffmpeg step failed (step name + the stderr lines that matter)
    └── StitchError                  the final cut cannot be made
        ├── MissingClipsError        clips not in the cache (names the shots)
        └── CorruptClipError         a cached clip failed to decode: quarantined, to be fetched again

httpx errors are mapped to ProviderError subclasses at the provider seam, never above it;
object-store (obstore) errors to RemoteError subclasses at the remote seam (remote/store.py).
A lost race on the remote (412/409) is a result there, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "EXIT_INTERRUPTED",
    "AccountError",
    "AuthError",
    "BudgetError",
    "CorruptClipError",
    "DownloadError",
    "FFmpegError",
    "InvalidClipError",
    "Issue",
    "KlingRenderError",
    "LockedError",
    "MissingClipsError",
    "OutputGoneError",
    "ProjectError",
    "ProviderError",
    "RemoteError",
    "RemoteIntegrityError",
    "RemoteTransientError",
    "RemoteVersionError",
    "StateError",
    "StitchError",
    "SubmitRefusedError",
    "SubmitRejectedError",
    "SubmitUncertainError",
    "TaskFailedError",
    "TaskGoneError",
    "TransientError",
    "UsageError",
]


EXIT_INTERRUPTED = 130  # a command stopped by Ctrl-C or SIGTERM, its state flushed (SPEC §2)


class KlingRenderError(Exception):
    """Base of every error kling-render reports to a user."""

    exit_code = 1


class UsageError(KlingRenderError):
    exit_code = 2


@dataclass(frozen=True, order=True)
class Issue:
    """One problem in a project file: ``file:line: path: message`` (``file:line:column:`` when the
    column matters, as for YAML syntax errors)."""

    file: str
    line: int
    path: str
    message: str
    column: int = 0

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.line and self.column:
            where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ProjectError(KlingRenderError):
    """An invalid project: every problem found, each an Issue."""

    exit_code = 2

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(set(issues), key=lambda i: (i.file, i.line, i.path, i.message))
        super().__init__("\n".join(str(i) for i in self.issues))


class BudgetError(KlingRenderError):
    exit_code = 3


class StateError(KlingRenderError):
    pass


class LockedError(StateError):
    pass


class ProviderError(KlingRenderError):
    pass


class AccountError(ProviderError):
    """The account cannot run tasks (no balance, key refused): every further submit would fail too,
    so the run stops submitting at once (tasks already running are still polled)."""


class AuthError(AccountError):
    """The API key is missing, malformed, or rejected (401/403): exit 2, as for any setting to fix
    (re-running as it is cannot help, unlike a failed shot)."""

    exit_code = 2


class TransientError(ProviderError):
    """A retryable failure; ``retry_after`` is the server's hint in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SubmitRefusedError(TransientError):
    """The submit was refused (429) or never left this machine: no task was created, so it may be
    sent again."""


class SubmitRejectedError(ProviderError):
    """The server refused this submit (4xx, or an envelope with a 4xx code): nothing was created.
    ``code`` is the server's own code, shown to the user verbatim."""

    def __init__(self, message: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class SubmitUncertainError(ProviderError):
    """The submit may have created a paid task (5xx, no answer, no usable task id): never re-send it
    blindly; the runner reconciles it through the provider's task list."""


class TaskFailedError(ProviderError):
    pass


class DownloadError(ProviderError):
    pass


class DownloadInterrupted(DownloadError):
    """The download did not finish for a reason that is not the output's: the network (after
    retries) or this machine's disk. The task is kept and fetched again; it never counts as an
    unusable result (which, found twice, pays for a replacement)."""


class OutputGoneError(DownloadError):
    """The output URL answered 404/410: expired (WaveSpeed keeps outputs 7 days) or never there."""


class InvalidClipError(DownloadError):
    """The bytes are not a usable clip (truncated, not a video, damaged framing): the structural
    check (media/check.py) says what and where."""


class TaskGoneError(ProviderError):
    """The provider does not know the task id (404 on poll): expired with its output, or never there."""


class RemoteError(KlingRenderError):
    """The remote (``KLING_RENDER_REMOTE``) failed; the message names the remote, never a credential."""


class RemoteTransientError(RemoteError):
    """A failure worth retrying (5xx, timeout, dropped connection); raised once the retries are spent."""


class RemoteIntegrityError(RemoteError):
    """An object read from the remote is not what its record says (size or sha256): never accepted."""


class RemoteVersionError(RemoteError):
    """A claim or clip record on the remote has a newer schema than this kling-render reads: it is
    neither used nor taken over (as a newer state file is refused); nothing is paid for its key."""


class FFmpegError(KlingRenderError):
    """``ran`` is False when ffmpeg never ran to an exit status (it could not start, or timed out)."""

    def __init__(self, step: str, stderr: str = "", *, ran: bool = True) -> None:
        self.step = step
        self.stderr = stderr
        self.ran = ran
        self.stderr_tail = _relevant_lines(stderr)
        detail = f": {' | '.join(self.stderr_tail)}" if self.stderr_tail else ""
        super().__init__(f"ffmpeg failed while {step}{detail}")

    @property
    def detail(self) -> str:
        """The lines of ffmpeg's output that say what went wrong (without the step)."""
        return " | ".join(self.stderr_tail) or "ffmpeg failed"


class StitchError(KlingRenderError):
    pass


class CorruptClipError(StitchError):
    """A cached clip is damaged: its bitstream failed to decode in the stitch (the one full decode
    every clip gets), or it fails the structural check.

    The clip was moved out of the cache (``moved_to``) and nothing it made is kept: the shot's
    clip is fetched again, which is free while the provider keeps its task's output. ``key`` is
    the clip's cache key (None when the clip is not in a cache), ``sha256`` its digest."""

    def __init__(
        self, shot_id: str, key: str | None, sha256: str | None, detail: str, moved_to: str | None = None
    ) -> None:
        self.shot_id = shot_id
        self.key = key
        self.sha256 = sha256
        self.detail = detail
        self.moved_to = moved_to
        where = f"quarantined to {moved_to}" if moved_to else "it is not used"
        super().__init__(
            f"{shot_id}: its clip is damaged ({detail}); {where}, and it will be fetched again "
            "from its task's output (free while the provider keeps it)"
        )


class MissingClipsError(StitchError):
    def __init__(self, shot_ids: list[str]) -> None:
        self.shot_ids = shot_ids
        super().__init__("no cached clip for shot(s): " + ", ".join(shot_ids) + " (run `kling-render render` first)")


def _relevant_lines(stderr: str, keep: int = 3) -> list[str]:
    """The few ffmpeg stderr lines that say what went wrong (errors first, else the last lines)."""
    noise = ("task finished", "terminating thread", "conversion failed!", "exiting normally")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.strip().lower().startswith(noise)]
    markers = ("error", "invalid", "no such", "not found", "failed", "unable", "cannot", "must")
    hits = [ln for ln in lines if any(m in ln.lower() for m in markers)]
    return (hits or lines)[-keep:]
