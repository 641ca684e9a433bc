"""An environment's lock on the AWS side, across processes and machines: an SSM parameter
below the toolkit's prefix, created only if absent (`PutParameter` without `Overwrite`
fails with ParameterAlreadyExists: that is the compare-and-swap), holding the holder's info;
released by deleting it. A holder that died leaves it behind: the second run's line names
the holder and the parameter to delete. (A lease with expiry and fencing on the shared
state store can take its place behind `locks.Lock`.)
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from ..locks import Lock, holder_info
from .clients import Clients
from .errors import error_code


class ParameterLock(Lock):
    def __init__(self, clients: Clients, parameter: str, command: str) -> None:
        self.clients = clients
        self.parameter = parameter
        self.command = command
        self.name = (f"SSM parameter {parameter} in {clients.ctx.region} "
                     f"(if that run is gone: aws ssm delete-parameter --name {parameter})")
        self._held = False

    def try_acquire(self) -> dict[str, Any] | None:
        info = holder_info(self.command)
        try:
            self.clients.ssm.put_parameter(Name=self.parameter, Value=json.dumps(info), Type="String",
                                           Description="goldenimage lock: who holds it", Overwrite=False)
        except ClientError as exc:
            if error_code(exc) != "ParameterAlreadyExists":
                raise
            try:
                value = self.clients.ssm.get_parameter(Name=self.parameter)["Parameter"]["Value"]
            except ClientError as exc2:
                if error_code(exc2) == "ParameterNotFound":  # released meanwhile: try again
                    return self.try_acquire()
                raise
            try:
                held: dict[str, Any] = json.loads(value)
            except ValueError:
                held = {"holder": value}
            return held
        self._held = True
        return None

    def release(self) -> None:
        if self._held:
            try:
                self.clients.ssm.delete_parameter(Name=self.parameter)
            except ClientError as exc:
                if error_code(exc) != "ParameterNotFound":
                    raise
            self._held = False
