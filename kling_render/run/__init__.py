"""Running the render graph: the scheduler, task ends, reconciliation, the remote's claims."""
