"""`python -m mlops_pipeline.serving`: the scoring service, configured from the environment."""

import sys

from pydantic import ValidationError

from .server import run
from .settings import ServingSettings

if __name__ == "__main__":
    try:
        settings = ServingSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"MLOPS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"error: invalid scoring-service settings: {problems}")
    run(settings)
