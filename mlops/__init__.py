"""mlops-pipeline: register, build-image, deploy, collect-and-validate, redeploy."""

__version__ = "0.1.0"
