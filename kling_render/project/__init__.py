"""The project file: YAML with line marks, schema, templates, model rules, media, rows."""
