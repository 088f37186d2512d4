"""The worker: claims jobs, runs them in process groups of their own, reports, renews leases."""
