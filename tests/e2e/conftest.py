"""The e2e tests share the integration tests' loopback AWS API (the moto server)."""

from tests.integration.conftest import moto_endpoint, moto_server  # noqa: F401  (fixtures)
