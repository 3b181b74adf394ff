"""kling-render: declarative render engine for AI video (YAML shots -> Kling clips -> final cut)."""

__version__ = "0.1.0"
