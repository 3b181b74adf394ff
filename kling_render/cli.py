"""The command line. Only this module imports click; each command calls one core function."""

from __future__ import annotations

import functools
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kling_render import __version__
from kling_render.errors import EXIT_INTERRUPTED, KlingRenderError, ProjectError, UsageError
from kling_render.masking import masked_streams

F = TypeVar("F", bound=Callable[..., Any])


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def handle_errors(func: F) -> F:
    """Turn every library error into one clear line per problem and the exit code of SPEC §2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Everything the command prints (progress, --json documents, these error lines, --verbose
        # tracebacks) goes through the masked streams: no known secret reaches the terminal.
        with masked_streams():
            return _handled(func, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _handled(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func`` with every library error turned into its lines and exit code (see handle_errors)."""
    root = click.get_current_context().find_root()
    verbose = bool(root.params.get("verbose") or root.meta.get(_VERBOSE))
    try:
        return func(*args, **kwargs)
    except ProjectError as exc:
        for issue in exc.issues:
            _echo_err(f"error: {issue}")
        _echo_err(f"{len(exc.issues)} error(s); nothing was written")
        sys.exit(exc.exit_code)
    except KlingRenderError as exc:
        if verbose:
            traceback.print_exc()
        _echo_err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _echo_err("interrupted: state saved; run the same command again to resume")
        sys.exit(EXIT_INTERRUPTED)
    except (click.exceptions.Exit, click.ClickException):
        raise
    except OSError as exc:
        # File-system trouble the core did not name (a read-only folder, a full disk): one line,
        # exit 1 like a StateError; the state file is written atomically, so it is intact.
        if verbose:
            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename else ""
        _echo_err(f"error: {exc.strerror or type(exc).__name__}{where}")
        sys.exit(1)
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        _echo_err(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for details)")
        sys.exit(1)


_VERBOSE = "kling_render.verbose"


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().meta[_VERBOSE] = True


def verbose_opt(func: F) -> F:
    """``--verbose`` after the subcommand too (``kling-render render p.yaml --verbose``)."""
    option = click.option(
        "--verbose",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_verbose,
        help="Show tracebacks for errors.",
    )
    return option(func)


# A directory stands for the project file in it (commands.find_project_file); left out, the current
# directory (as `terraform plan` does).
project_arg = click.argument("project", type=click.Path(path_type=Path), default=Path("."), required=False)
var_opt = click.option(
    "--var", "vars_", multiple=True, metavar="KEY=VALUE", help="Override a template variable."
)


def _provider_names() -> tuple[str, ...]:
    from kling_render.providers import PROVIDER_NAMES

    return PROVIDER_NAMES


provider_opt = click.option(
    "--provider",
    type=click.Choice(_provider_names()),
    help="Provider (and clip cache namespace) to use; default: the project's provider.",
)
force_opt = click.option(
    "--force",
    is_flag=True,
    help="Make the final cut anew even when it is up to date: every segment and the audio are encoded "
    "again (the segment store and the remote's segments are not read) and replace the stored ones.",
)
only_opt = click.option("--only", help="Comma-separated shot ids to work on.")
row_opt = click.option("--row", "row", metavar="KEY[,KEY]", help="Rows of a rows: project to work on (their keys).")
json_opt = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, nothing else.")


class FiniteFloat(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.2
    """A float that is finite and within bounds. click's float and FloatRange take "nan" and "inf"
    (NaN compares false with every bound), which switched `--max-cost nan` off as a budget."""

    name = "float"

    def __init__(self, low: float = 0.0, high: float | None = None) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < self.low or (self.high is not None and number > self.high):
            upper = f" and at most {self.high:g}" if self.high is not None else ""
            self.fail(f"{value!r} must be at least {self.low:g}{upper}", param, ctx)
        return number


wait_lock_opt = click.option(
    "--wait-lock",
    type=FiniteFloat(0),
    default=0.0,
    metavar="SECONDS",
    help="Wait this long for another run of the project to finish.",
)


def _only(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _print_json(doc: Any) -> None:
    from kling_render.report.jsonout import json_text

    click.echo(json_text(doc, indent=2))


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """kling-render's version and the ffmpeg it uses (path and version): both decide a cut's bytes."""
    if not value or ctx.resilient_parsing:
        return
    from kling_render.errors import FFmpegError
    from kling_render.media import caps as ffmpeg_caps

    click.echo(f"kling-render {__version__}")
    try:
        build = ffmpeg_caps.current()
    except FFmpegError as exc:
        from kling_render.media import ffmpeg

        click.echo(f"ffmpeg: {ffmpeg.ffmpeg_exe()} cannot be used: {exc}")
        ctx.exit(2)
    click.echo(build.label)
    if build.too_old:
        oldest = ".".join(map(str, ffmpeg_caps.MIN_VERSION))
        click.echo(f"warning: this ffmpeg is older than {oldest}, the oldest kling-render supports")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version of kling-render and of the ffmpeg it uses, and exit.",
)
@click.option("--verbose", is_flag=True, help="Show tracebacks for errors (also accepted after the command).")
def cli(verbose: bool) -> None:
    """Render AI video from YAML projects kept in git."""


@cli.command()
@project_arg
@var_opt
@click.option("--json", "as_json", is_flag=True, help="The result, or the list of errors, as one JSON document.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    help="github: each error as a GitHub Actions annotation (::error file=…,line=…::…) on stdout.",
)
@verbose_opt
@handle_errors
def validate(project: Path, vars_: tuple[str, ...], as_json: bool, fmt: str) -> None:
    """Check the project file: schema, model rules, files, image limits (exit 2 listing every error)."""
    from kling_render.app import commands
    from kling_render.report import issues as report_issues

    fmt = "json" if as_json else fmt
    try:
        result = commands.validate(project, vars_)
    except KlingRenderError as exc:
        if fmt == "text":
            raise
        found = report_issues.issues_of(exc)
        click.echo(report_issues.failure_text(found, fmt))
        _echo_err(f"{len(found)} error(s); nothing was written")
        sys.exit(exc.exit_code)
    if fmt == "json":
        _print_json(result)
    else:
        click.echo(f"{result['file']}: valid ({result['shots']} shots)")


@cli.command()
@project_arg
@var_opt
@provider_opt
@only_opt
@row_opt
@json_opt
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Also save the plan as JSON.")
@click.option(
    "--out-full",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Also write the whole plan in the chosen --format to FILE; a Markdown plan too long for a pull-request "
    "comment is printed collapsed and points at it.",
)
@click.option(
    "--full-url", metavar="URL", help="Where readers find the --out-full file (e.g. the CI run's artifacts page)."
)
@click.option(
    "--max-cost", type=FiniteFloat(0), metavar="USD", help="Budget to check against (overrides budget.max_usd)."
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there is nothing to render or change, 2 when there are changes, 3 when over budget "
    "(an invalid project is exit 2 too: validate first).",
)
@click.option(
    "--compare-providers",
    is_flag=True,
    help="Price every shot on every provider that offers its model, side by side, with the cheapest.",
)
@verbose_opt
@handle_errors
def plan(
    project: Path,
    vars_: tuple[str, ...],
    provider: str | None,
    only: str | None,
    row: str | None,
    as_json: bool,
    fmt: str,
    out: str | None,
    out_full: str | None,
    full_url: str | None,
    max_cost: float | None,
    detailed_exitcode: bool,
    compare_providers: bool,
) -> None:
    """Show resolved shots, prices, what is cached and what changed since the lock."""
    from kling_render.app import commands
    from kling_render.project.rows import only_ids
    from kling_render.report import text as report_text

    loaded = commands.load(project, vars_)
    if compare_providers:
        if provider is not None or out is not None or out_full is not None or fmt == "markdown" or detailed_exitcode:
            raise UsageError(
                "--compare-providers prices every provider: it takes no --provider, --out, --out-full, "
                "markdown or --detailed-exitcode"
            )
        comparison = commands.compare_for(loaded, only_ids(loaded, _only(row), _only(only)))
        if as_json or fmt == "json":
            _print_json(comparison.to_json())
        else:
            click.echo(report_text.comparison_table(comparison))
        return
    guard = commands.output_guard(loaded)
    out_path = commands.safe_output(loaded, out, "--out", guard) if out is not None else None  # before any write
    full_path = commands.safe_output(loaded, out_full, "--out-full", guard) if out_full is not None else None
    the_plan = commands.plan_for(
        loaded, provider, only_ids(loaded, _only(row), _only(only)), max_cost=max_cost, remote=True
    )
    if out_path is not None:
        commands.save_plan(the_plan, out_path)
    note = commands.full_plan_note(full_path, full_url)
    shown, whole = report_text.plan_text("json" if as_json else fmt, the_plan, full_note=note)
    if full_path is not None:
        commands.save_text(whole.rstrip("\n") + "\n", full_path)
    click.echo(shown)
    if detailed_exitcode:
        sys.exit(commands.detailed_exit_code(the_plan))


@cli.command()
@project_arg
@var_opt
@provider_opt
@only_opt
@row_opt
@click.option(
    "--max-cost",
    type=FiniteFloat(0),
    metavar="USD",
    help="Budget for this run (overrides budget.max_usd; 0 spends nothing).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Tasks at once (default: provider_options.<provider>.concurrency, else 2 for wavespeed and fal).",
)
@click.option(
    "--poll-interval", type=FiniteFloat(0.01, 600), metavar="SECONDS", help="Seconds between polls."
)
@click.option(
    "--resubmit-unknown",
    is_flag=True,
    help="Re-submit shots whose submit got no answer (this may pay twice).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Submit shots that failed for good or used their cap of paid tasks again (this pays again).",
)
@click.option("--no-stitch", is_flag=True, help="Generate the clips only.")
@click.option(
    "--until",
    type=click.Choice(["stills"]),
    help="Pay for the stills only, then write the report to review them (a later plain render pays for the video).",
)
@click.option(
    "--shard",
    metavar="K/N",
    help="Render only shard K of N (a stable split of the shots by key, for a CI matrix); needs a remote, "
    "does not stitch (a later `stitch` pulls every clip).",
)
@force_opt
@wait_lock_opt
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event on stdout (JSON lines).")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Render exactly this reviewed plan (from `plan --out`); refuse if it is stale.",
)
@verbose_opt
@handle_errors
def render(
    project: Path,
    vars_: tuple[str, ...],
    provider: str | None,
    only: str | None,
    row: str | None,
    max_cost: float | None,
    concurrency: int | None,
    poll_interval: float | None,
    resubmit_unknown: bool,
    retry_failed: bool,
    no_stitch: bool,
    until: str | None,
    shard: str | None,
    force: bool,
    wait_lock: float,
    as_json: bool,
    plan_file: Path | None,
) -> None:
    """Generate every shot that is not cached, then stitch the final cut."""
    from kling_render.app import commands, pipeline
    from kling_render.app import options as app_options
    from kling_render.plan.shard import parse_shard
    from kling_render.project.rows import only_ids
    from kling_render.report import outcome
    from kling_render.report.jsonout import json_text

    shard_k_n = parse_shard(shard) if shard is not None else None  # exit 2 before anything is read
    loaded = commands.load(project, vars_)
    selected = only_ids(loaded, _only(row), _only(only))
    reviewed, provider, selected = commands.reviewed_plan(plan_file, provider, selected)
    opts = app_options.RenderOptions(
        reviewed_plan=reviewed,
        provider=provider,
        only=selected,
        max_cost=max_cost,
        concurrency=concurrency,
        poll_interval=poll_interval,
        resubmit_unknown=resubmit_unknown,
        retry_failed=retry_failed,
        no_stitch=no_stitch,
        shard=shard_k_n,
        json_events=as_json,
        lock_timeout=wait_lock,
        force=force,
        until="stills" if until == "stills" else None,
    )
    result = pipeline.render(loaded, opts, stream=sys.stdout if as_json else None)
    if until == "stills" and result.exit_code == 0:  # the approval gate: the stills, to review
        from kling_render.report import collect as report_collect  # the HTML report: not on every start

        _echo_err(f"report: {report_collect.write_report(loaded, provider, None)} (review the stills, then render)")
    if as_json:
        click.echo(json_text(outcome.render_finished(loaded, result)))
    else:
        for line in outcome.render_lines(loaded, result):
            _echo_err(line)
    sys.exit(result.exit_code)


@cli.command()
@project_arg
@var_opt
@provider_opt
@row_opt
@force_opt
@wait_lock_opt
@json_opt
@verbose_opt
@handle_errors
def stitch(
    project: Path,
    vars_: tuple[str, ...],
    provider: str | None,
    row: str | None,
    force: bool,
    wait_lock: float,
    as_json: bool,
) -> None:
    """Stitch the final cut from cached clips only (names the shots that have none).

    Skipped when the cut is up to date: same clips, cut settings, ffmpeg and kling-render, and the
    file still has the digest recorded when it was made (--force stitches anyway)."""
    from kling_render.app import commands
    from kling_render.app import cut as app_cut
    from kling_render.project.rows import select_rows
    from kling_render.report import outcome

    loaded = commands.load(project, vars_)
    rows = select_rows(loaded, _only(row))
    if loaded.rows is not None:
        _stitch_rows(loaded, provider, rows, force=force, wait_lock=wait_lock, as_json=as_json)
        return
    done = app_cut.stitch(loaded, provider, force=force, lock_timeout=wait_lock)
    if as_json:
        _print_json(outcome.stitch_document(loaded, commands.pick_provider(loaded, provider), done))
    _echo_err(f"final cut{' up to date' if done.up_to_date else ''}: {done.path}")


def _stitch_rows(loaded: Any, provider: str | None, rows: Any, *, force: bool, wait_lock: float, as_json: bool) -> None:
    """``stitch`` of a rows: project: a cut per row; exit 1 naming the rows that could not be cut."""
    from kling_render.app import commands, rows_pipeline
    from kling_render.report import rows as report_rows

    cuts = rows_pipeline.stitch_rows(loaded, provider, rows, force=force, lock_timeout=wait_lock)
    if as_json:
        _print_json({"project": loaded.name, "provider": commands.pick_provider(loaded, provider),
                     "cuts": [cut.to_json() for cut in cuts]})  # fmt: skip
    for line in report_rows.cut_lines([cut.to_json() for cut in cuts]):
        _echo_err(line)
    if any(cut.outcome is None for cut in cuts):
        sys.exit(1)


@cli.command()
@project_arg
@var_opt
@provider_opt
@row_opt
@json_opt
@click.option("--check", is_flag=True, help="Exit 1 unless every step (take, still) is done (for CI gates).")
@verbose_opt
@handle_errors
def status(
    project: Path, vars_: tuple[str, ...], provider: str | None, row: str | None, as_json: bool, check: bool
) -> None:
    """Per-shot state from the state file: pending, submitted, done, failed, unknown (by row in a rows: project)."""
    from kling_render.app import commands, rows_pipeline
    from kling_render.project.rows import select_rows
    from kling_render.report import rows as report_rows
    from kling_render.report import text as report_text

    loaded = commands.load(project, vars_)
    doc = rows_pipeline.status_of(loaded, provider, select_rows(loaded, _only(row)))
    for message in [*doc.get("quarantined", []), *doc.get("differs_from_team", [])]:
        _echo_err(f"warning: {message}")
    if as_json:
        _print_json(doc)
    else:
        click.echo(report_rows.status_table(doc) if loaded.rows is not None else report_text.status_table(doc))
    if check and any(s["status"] != "done" for s in [*doc.get("stills", []), *doc["shots"]]):
        sys.exit(1)


@cli.command()
@project_arg
@var_opt
@provider_opt
@row_opt
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="Where to write the page (default: renders/<stem>-report.html beside the project; "
    "a rows: project's row pages go in renders/<stem>-report/).",
)
@verbose_opt
@handle_errors
def report(project: Path, vars_: tuple[str, ...], provider: str | None, row: str | None, out: str | None) -> None:
    """Write a self-contained HTML report: every shot's frames, prompt, cost, timings and the final cut."""
    from kling_render.app import commands
    from kling_render.project.rows import select_rows
    from kling_render.report import rows_html

    loaded = commands.load(project, vars_)
    for path in rows_html.write_reports(loaded, provider, select_rows(loaded, _only(row)), out, index=not row):
        _echo_err(f"report: {path}")


@cli.command()
@click.argument("project", required=False, type=click.Path(path_type=Path, dir_okay=False))
@var_opt
@json_opt
@click.option(
    "--check-prices",
    is_flag=True,
    help="Ask the providers' pricing endpoints for each model's price at its defaults (WaveSpeed with "
    "WAVESPEED_API_KEY, fal with FAL_KEY); exit 1 when one differs from the catalog.",
)
@verbose_opt
@handle_errors
def models(project: Path | None, vars_: tuple[str, ...], as_json: bool, check_prices: bool) -> None:
    """The model catalog: endpoints, fields, limits and prices (with PROJECT: its declared models too)."""
    from kling_render.app import commands
    from kling_render.report import text as report_text

    if not check_prices:
        catalog = commands.models(project, vars_)
        if as_json:
            _print_json(catalog)
        else:
            click.echo(report_text.models_table(catalog))
        return
    checks = commands.check_prices(project, vars_)
    if as_json:
        _print_json([c.to_json() for c in checks])
    else:
        click.echo(report_text.price_checks_table(checks))
    if any(c.status in ("differs", "error") for c in checks):
        sys.exit(1)


@cli.command()
@verbose_opt
@handle_errors
def schema() -> None:
    """Print the project JSON Schema."""
    from kling_render.project.schema import schema_text

    click.echo(schema_text(), nl=False)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@verbose_opt
@handle_errors
def init(directory: Path) -> None:
    """Write a small working project (with images) that renders offline."""
    from kling_render.app.initproject import write_init_project

    path = write_init_project(directory)
    click.echo(f"wrote {path}; try: kling-render render {path}")


def _terminate(signum: int, frame: object) -> None:
    # CI cancels with SIGTERM: stop the way Ctrl-C does, so state is flushed and the exit code is 130.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="kling-render")


__all__ = ["UsageError", "cli", "main"]
