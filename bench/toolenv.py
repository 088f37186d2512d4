"""The environment a benchmark runs `jobctl` in: the caller's, without JOBCTL_* settings and
without PYTHONDONTWRITEBYTECODE (set in some sandboxes), so that Python writes and then reuses
the bytecode of jobctl's modules as it does for an installed tool; otherwise every command
would compile jobctl's source at start-up and the figures would measure the compiler."""

from __future__ import annotations

import os


def tool_env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("JOBCTL_") and key != "PYTHONDONTWRITEBYTECODE"}
    # The benchmarks' workers run as whoever runs them, root included (CI, the harness): a
    # root worker on PostgreSQL refuses to start without --allow-root (jobctl.runas).
    env["JOBCTL_ALLOW_ROOT"] = "1"
    env.update(settings)
    return env
