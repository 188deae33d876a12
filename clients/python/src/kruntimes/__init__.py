"""Run bash and python programs in the warm pods of kruntimes Runtimes.

kruntimes runs trusted code only: Runs that share a warm pod share its kernel, network
and filesystem. It is not a sandbox for hostile code.
"""

from ._result import TERMINAL_PHASES, Output, Result
from .aio import AsyncClient
from .client import Client, RunRef
from .errors import (
    ApiError,
    ClusterUnreachable,
    ConfigError,
    Forbidden,
    InvalidRun,
    KruntimesError,
    RunNotFound,
    RunTimeout,
    Unauthorized,
)

__all__ = [
    "TERMINAL_PHASES",
    "ApiError",
    "AsyncClient",
    "Client",
    "ClusterUnreachable",
    "ConfigError",
    "Forbidden",
    "InvalidRun",
    "KruntimesError",
    "Output",
    "Result",
    "RunNotFound",
    "RunRef",
    "RunTimeout",
    "Unauthorized",
]
