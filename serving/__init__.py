"""The scoring service: MLflow-compatible /invocations, input checks, metrics and data capture.

It ships inside model images, so it never imports prefect or the rest of this project.
"""

__version__ = "0.1.0"
