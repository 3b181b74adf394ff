"""The use cases behind the commands (validate, plan, render, stitch, status, report, init)."""
