"""Pure planning: keys, the plan (graph of steps with statuses), rows, shards."""
