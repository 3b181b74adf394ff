"""fal (SPEC §5): its queue, platform and storage APIs behind the provider seam."""
