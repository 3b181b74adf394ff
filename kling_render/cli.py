"""The command line. Only this module imports click; each command calls one core function."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kling_render import __version__
from kling_render.errors import KlingRenderError, ProjectError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def handle_errors(func: F) -> F:
    """Turn every library error into one clear line per problem and the exit code of SPEC §2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(click.get_current_context().find_root().params.get("verbose"))
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
        except Exception as exc:
            if verbose:
                traceback.print_exc()
            _echo_err(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for details)")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


project_arg = click.argument("project", type=click.Path(path_type=Path, dir_okay=False))
var_opt = click.option(
    "--var", "vars_", multiple=True, metavar="KEY=VALUE", help="Override a template variable."
)
provider_opt = click.option("--provider", help="local | wavespeed (default: the project's provider).")
only_opt = click.option("--only", help="Comma-separated shot ids to work on.")
json_opt = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, nothing else.")


def _only(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


def _print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kling-render")
@click.option("--verbose", is_flag=True, help="Show tracebacks for errors.")
def cli(verbose: bool) -> None:
    """Render AI video from YAML projects kept in git."""


@cli.command()
@project_arg
@var_opt
@json_opt
@handle_errors
def validate(project: Path, vars_: tuple[str, ...], as_json: bool) -> None:
    """Check the project file: schema, model rules, files, image limits."""
    from kling_render import commands

    result = commands.validate(project, vars_)
    if as_json:
        _print_json(result)
    else:
        click.echo(f"{project}: valid ({result['shots']} shots)")


@cli.command()
@project_arg
@var_opt
@provider_opt
@only_opt
@json_opt
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table")
@click.option(
    "--out", "out", type=click.Path(path_type=Path, dir_okay=False), help="Also save the plan as JSON."
)
@handle_errors
def plan(
    project: Path,
    vars_: tuple[str, ...],
    provider: str | None,
    only: str | None,
    as_json: bool,
    fmt: str,
    out: Path | None,
) -> None:
    """Show resolved shots, prices, what is cached and what changed since the lock."""
    from kling_render import commands, report_text

    the_plan = commands.plan(project, vars_, provider, _only(only))
    if out is not None:
        commands.save_plan(the_plan, out)
    if as_json or fmt == "json":
        _print_json(the_plan.to_json())
    elif fmt == "markdown":
        click.echo(report_text.plan_markdown(the_plan))
    else:
        click.echo(report_text.plan_table(the_plan))


@cli.command()
@project_arg
@var_opt
@provider_opt
@only_opt
@click.option("--max-cost", type=float, metavar="USD", help="Budget for this run (overrides budget.max_usd).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    help="Tasks at once (default: provider_options.<provider>.concurrency, else 2 for wavespeed).",
)
@click.option(
    "--poll-interval", type=click.FloatRange(0.01, 600), metavar="SECONDS", help="Seconds between polls."
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
    "--wait-lock",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Wait this long for another run of the project to finish.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event on stdout (JSON lines).")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Render exactly this reviewed plan (from `plan --out`); refuse if it is stale.",
)
@handle_errors
def render(
    project: Path,
    vars_: tuple[str, ...],
    provider: str | None,
    only: str | None,
    max_cost: float | None,
    concurrency: int | None,
    poll_interval: float | None,
    resubmit_unknown: bool,
    retry_failed: bool,
    no_stitch: bool,
    wait_lock: float,
    as_json: bool,
    plan_file: Path | None,
) -> None:
    """Generate every shot that is not cached, then stitch the final cut."""
    from kling_render import commands, pipeline

    loaded = commands.load(project, vars_)
    reviewed = None
    if plan_file is not None:
        reviewed = commands.load_saved_plan(plan_file)
        if provider is not None and provider != reviewed.get("provider"):
            raise UsageError(f"--provider {provider} differs from the plan's ({reviewed.get('provider')})")
        provider = str(reviewed.get("provider"))
        only = ",".join(reviewed["selected"]) if reviewed.get("selected") else only
    opts = pipeline.RenderOptions(
        reviewed_plan=reviewed,
        provider=provider,
        only=_only(only),
        max_cost=max_cost,
        concurrency=concurrency,
        poll_interval=poll_interval,
        resubmit_unknown=resubmit_unknown,
        retry_failed=retry_failed,
        no_stitch=no_stitch,
        json_events=as_json,
        lock_timeout=wait_lock,
    )
    result = pipeline.render(loaded, opts, stream=sys.stdout if as_json else None)
    report = result.report
    if as_json:
        click.echo(
            json.dumps(
                {
                    "event": "finished",
                    "exit_code": result.exit_code,
                    **report,
                    "final_cut": str(result.final_cut) if result.final_cut else None,
                }
            )
        )
    else:
        shots = report.get("shots", [])
        counts: dict[str, int] = {}
        for shot in shots:
            counts[shot["status"]] = counts.get(shot["status"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        spent = f"spent ${report.get('spent_usd', 0):.4f}"
        if report.get("refunded_usd"):
            spent += f" (${report['refunded_usd']:.4f} of failed tasks refunded)"
        if report.get("uncertain_usd"):
            spent += f" (and up to ${report['uncertain_usd']:.4f} on submits that got no answer)"
        _echo_err(f"{loaded.name}: {summary}; {spent}")
        if report.get("account_stopped"):
            _echo_err(f"error: {report['account_stopped']} (no more submits this run)")
        for shot in shots:
            if shot["status"] in ("failed", "unknown") and shot.get("error"):
                _echo_err(f"  {shot['id']}: {shot['status']}: {shot['error']}")
            if shot.get("warning"):
                _echo_err(f"  {shot['id']}: warning: {shot['warning']}")
        if result.final_cut:
            _echo_err(f"final cut: {result.final_cut}")
        if result.exit_code == EXIT_INTERRUPTED:
            _echo_err("interrupted: state saved; run the same command again to resume")
    sys.exit(result.exit_code)


@cli.command()
@project_arg
@var_opt
@provider_opt
@handle_errors
def stitch(project: Path, vars_: tuple[str, ...], provider: str | None) -> None:
    """Stitch the final cut from cached clips only (names the shots that have none)."""
    from kling_render import commands, pipeline

    path = pipeline.stitch(commands.load(project, vars_), provider)
    _echo_err(f"final cut: {path}")


@cli.command()
@project_arg
@var_opt
@provider_opt
@json_opt
@click.option("--check", is_flag=True, help="Exit 1 unless every shot is done (for CI gates).")
@handle_errors
def status(project: Path, vars_: tuple[str, ...], provider: str | None, as_json: bool, check: bool) -> None:
    """Per-shot state from the state file: pending, submitted, done, failed, unknown."""
    from kling_render import commands, pipeline, report_text

    doc = pipeline.status(commands.load(project, vars_), provider)
    if as_json:
        _print_json(doc)
    else:
        click.echo(report_text.status_table(doc))
    if check and any(s["status"] != "done" for s in doc["shots"]):
        sys.exit(1)


@cli.command()
@project_arg
@var_opt
@provider_opt
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write the page (default: renders/<stem>-report.html beside the project).",
)
@handle_errors
def report(project: Path, vars_: tuple[str, ...], provider: str | None, out: Path | None) -> None:
    """Write a self-contained HTML report: every shot's frames, prompt, cost, timings and the final cut."""
    from kling_render import commands, report_html

    path = report_html.write_report(commands.load(project, vars_), provider, out)
    _echo_err(f"report: {path}")


@cli.command()
@json_opt
@handle_errors
def models(as_json: bool) -> None:
    """The model catalog: inputs, limits and prices."""
    from kling_render import commands, report_text

    catalog = commands.models()
    if as_json:
        _print_json(catalog)
    else:
        click.echo(report_text.models_table(catalog))


@cli.command()
@handle_errors
def schema() -> None:
    """Print the project JSON Schema."""
    from kling_render.schema import schema_text

    click.echo(schema_text(), nl=False)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@handle_errors
def init(directory: Path) -> None:
    """Write a small working project (with images) that renders offline."""
    from kling_render.initproject import write_init_project

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
