"""``make attack``: hostile clients against a real API process (quotas, slow bodies)."""
