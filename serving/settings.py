"""Scoring-service settings: every field reads MLOPS_<FIELD> from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """Configuration of one scoring-service process (and its uvicorn workers)."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore", protected_namespaces=())

    model_uri: str = Field(
        description="models:/name/3, models:/name@alias, runs:/..., or a local MLflow model dir."
    )
    host: str = Field(default="127.0.0.1", description="Bind address (images use 0.0.0.0).")
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes.")
    model_name: str | None = Field(default=None, description="Metric/capture label override.")
    model_version: str | None = Field(default=None, description="Metric/capture label override.")
    image: str | None = Field(default=None, description="Image reference reported by /version.")
    api_key_file: Path | None = Field(
        default=None, description="File with the primary key on line 1, optional secondary on 2."
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="413 above this.")
    max_rows: int = Field(default=100_000, ge=1, description="Most rows one request may score.")
    extra_columns: Literal["reject", "ignore"] = Field(
        default="reject", description="What to do with input columns the signature lacks."
    )
    capture_uri: str | None = Field(
        default=None, description="Local dir or fsspec URI for captured data; unset = off."
    )
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="Share of requests kept.")
    capture_flush_seconds: float = Field(default=5.0, gt=0, description="Writer batch interval.")
    capture_batch_rows: int = Field(
        default=20_000, ge=1, description="Write a batch early once this many rows are queued."
    )
    capture_queue_rows: int = Field(
        default=200_000, ge=1, description="Rows held in memory before new ones are dropped."
    )
    capture_spool_dir: Path | None = Field(
        default=None, description="Local spill directory; default <tmp>/mlops-capture-spool."
    )
    capture_spool_max_bytes: int = Field(
        default=512 * 1024 * 1024, ge=0, description="Spill limit; beyond it rows are dropped."
    )
    shutdown_timeout: float = Field(
        default=20.0, gt=0, description="Seconds SIGTERM waits for requests and capture upload."
    )
    keep_alive_seconds: int = Field(default=75, ge=1, description="HTTP keep-alive timeout.")
    log_level: str = Field(default="info")
