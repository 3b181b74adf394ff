"""A project's problems for machines: the JSON list of ``validate --json`` and the workflow
commands of ``validate --format github`` (GitHub shows them on the pull request's lines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kling_render.errors import Issue, KlingRenderError, ProjectError


def issue_json(issue: Issue) -> dict[str, Any]:
    """One problem: file, line and column (None where unknown), document path and message."""
    return {
        "file": issue.file or None,
        "line": issue.line or None,
        "column": issue.column or None,
        "path": issue.path or None,
        "message": issue.message,
        "text": str(issue),
    }


def invalid_json(issues: Sequence[Issue], *, project: str | None = None) -> dict[str, Any]:
    """``validate --json`` of an invalid project (or of a usage error, as one issue without a line)."""
    return {"project": project, "valid": False, "errors": [issue_json(i) for i in issues]}


def issues_of(exc: KlingRenderError) -> list[Issue]:
    """The problems an error stands for: a project's located issues, or the error as one issue."""
    if isinstance(exc, ProjectError):
        return list(exc.issues)
    return [Issue("", 0, "", str(exc))]


def failure_text(issues: Sequence[Issue], fmt: str) -> str:
    """What ``validate --format json|github`` prints on stdout for an invalid project."""
    if fmt == "json":
        from kling_render.report.jsonout import json_text

        return json_text(invalid_json(issues), indent=2)
    return "\n".join(github_annotations(issues))


def github_annotations(issues: Sequence[Issue]) -> list[str]:
    """``::error file=F,line=L,col=C,title=kling-render::path: message`` per problem (GitHub's
    workflow-command syntax; its escapes keep a line break or a ``::`` in a message from ending
    the command or starting another)."""
    lines = []
    for issue in issues:
        props = [("file", issue.file), ("line", issue.line or None), ("col", issue.column or None)]
        fields = [f"{name}={_property(str(value))}" for name, value in props if value]
        fields.append("title=kling-render")
        text = f"{issue.path}: {issue.message}" if issue.path else issue.message
        lines.append(f"::error {','.join(fields)}::{_data(text)}")
    return lines


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


__all__ = ["failure_text", "github_annotations", "invalid_json", "issue_json", "issues_of"]
