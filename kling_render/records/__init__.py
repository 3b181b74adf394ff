"""What kling-render writes down: run state, the task ledger, the lock file, stitch manifests."""
