"""`python -m mlops_pipeline.serving`: the scoring service, set up by MLOPS_SERVING_* variables."""

import sys

from pydantic import ValidationError

from .server import run
from .settings import ServingSettings, env_name

if __name__ == "__main__":
    try:
        settings = ServingSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{env_name('_'.join(map(str, e['loc'])))}: {e['msg']}" for e in exc.errors()
        )
        sys.exit(f"error: invalid scoring-service settings: {problems}")
    run(settings)
