"""Docker fixtures (engine, base image, shared wheelhouse) for the tests in this folder."""

from tests.docker_support import docker_build_env, docker_engine, session_wheelhouse  # noqa: F401
