"""`python -m serving`: run the scoring service configured from MLOPS_* environment variables."""

import sys

from pydantic import ValidationError

from serving.server import run
from serving.settings import ServingSettings

if __name__ == "__main__":
    try:
        settings = ServingSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MLOPS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"error: invalid scoring-service settings: {problems}")
    run(settings)
