"""The WaveSpeed provider: the client and what its answers mean."""
