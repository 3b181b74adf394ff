"""Where outputs are kept: the local content-addressed cache, segments, and the shared remote."""
