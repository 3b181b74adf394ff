"""Models a project declares under ``models:``: checked and read exactly as the built-in catalog.

A declared model may not reuse a built-in id (with or without ``kwaivgi/``): a shot's key names
its model, and the same id meaning two endpoints would let one model's cached clip stand in for
the other's, and a price differ from the one `models` shows. Built-in prices are changed
under ``pricing:`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kling_render.catalog.catalog import Model, load_catalog, parse_models
from kling_render.errors import Issue
from kling_render.project.document import Document


def declared_models(doc: Document) -> tuple[dict[str, Model], list[Issue]]:
    """The project's declared models, and every schema issue of ``doc`` with them known.

    Shots may name the declared models and give their fields: the schema is extended with
    their ids and field types (one validation pass over the file either way). The problems
    the schema cannot see in ``models:`` (unknown field references, defaults out of range, a
    built-in id) are added at their lines.
    """
    from kling_render.project.schema import model_id_valid, model_spec_valid, schema_issues

    raw = doc.data.get("models") if isinstance(doc.data, dict) else None
    if not isinstance(raw, dict) or not raw:
        return {}, schema_issues(doc)
    # Every declared id is known to the schema, even one whose entry is broken: its shots are
    # then skipped quietly instead of each reporting an unknown model.
    types = {mid: _field_types(spec) for mid, spec in raw.items() if isinstance(mid, str)}
    images = frozenset(
        mid for mid, spec in raw.items() if isinstance(spec, Mapping) and spec.get("output") == "image"
    )
    issues = schema_issues(doc, declared=types, image_models=images)
    valid = {k: v for k, v in raw.items() if model_id_valid(k) and model_spec_valid(v)}
    builtin = frozenset(load_catalog())
    models, problems = parse_models(valid, builtin=False, source=f"{doc.file} models", reserved=builtin)
    issues += [doc.issue(("models", mid, *path), message) for mid, path, message in problems]
    return models, issues


def _field_types(spec: Any) -> dict[str, str]:
    fields = spec.get("fields") if isinstance(spec, Mapping) else None
    if not isinstance(fields, Mapping):
        return {}
    return {
        str(name): f["type"]
        for name, f in fields.items()
        if isinstance(f, Mapping) and isinstance(f.get("type"), str)
    }
