"""Prefect task wrappers over the Prefect-free domain (`mlops_pipeline.*`).

Importing the package (as every flow run does) lets the core read Prefect Secret blocks that
settings name (`mlops_pipeline.secrets`), without the core importing Prefect.
"""

from mlops_pipeline import secrets
from mlops_pipeline.tasks.secret_blocks import load_secret_block

secrets.register_block_reader(load_secret_block)
