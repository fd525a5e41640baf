"""`python -m serving`: run the scoring service configured from MLOPS_* environment variables."""

from serving.server import run
from serving.settings import ServingSettings

if __name__ == "__main__":
    run(ServingSettings())
