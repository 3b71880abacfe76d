"""The coordinator's gRPC service for devices (``shardkeep.v1.Coordinator``)."""

from __future__ import annotations

from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.sdk.attestation import AttestationError
from coordinator.coordinator import (
    BadAsk,
    Coordinator,
    Denied,
    NoBackup,
    NotApproved,
    NotEnrolled,
    ServerShareFailed,
    UnknownCeremony,
)
from shardkeep.server import AsyncHealthServicer, bind, new_health_servicer
from shardkeep.tls import ServerTls
from shardkeep.v1 import ceremony_pb2, coordinator_pb2, coordinator_pb2_grpc

__all__ = ["SERVICE_NAME", "create_server"]

SERVICE_NAME: Final = "shardkeep.v1.Coordinator"

# One table: the coordinator's errors -> gRPC status codes.
_STATUS: Final = (
    (NotEnrolled, grpc.StatusCode.UNAUTHENTICATED),
    (Denied, grpc.StatusCode.PERMISSION_DENIED),
    (NotApproved, grpc.StatusCode.PERMISSION_DENIED),
    (BadAsk, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownCeremony, grpc.StatusCode.NOT_FOUND),
    (NoBackup, grpc.StatusCode.NOT_FOUND),
    (ServerShareFailed, grpc.StatusCode.ABORTED),
    (AttestationError, grpc.StatusCode.FAILED_PRECONDITION),
)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            if isinstance(error, ServerShareFailed):
                context.set_trailing_metadata(
                    (("shardkeep-culprits", error.culprits), ("shardkeep-reason", error.reason))
                )
            await context.abort(status, str(error))
    if isinstance(error, grpc.aio.AioRpcError):  # the host or relay refused
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"upstream: {error.code().name}")
    raise error


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    async def Enroll(
        self,
        request: coordinator_pb2.EnrollRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.EnrollResponse:
        try:
            self._coordinator.enroll(request.enrollment_code, bytes(request.device_key))
        except Exception as e:
            await _abort(context, e)
        return coordinator_pb2.EnrollResponse()

    async def StartCeremony(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.StartedCeremony:
        try:
            return await self._coordinator.start(request)
        except Exception as e:
            await _abort(context, e)
            raise

    async def FinishCeremony(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ceremony_pb2.CeremonyResult:
        try:
            return await self._coordinator.finish(request)
        except Exception as e:
            await _abort(context, e)
            raise

    async def ApproveCeremony(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.ApprovedCeremony:
        try:
            self._coordinator.approve(request)
        except Exception as e:
            await _abort(context, e)
        return coordinator_pb2.ApprovedCeremony()

    async def JoinCeremony(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.StartedCeremony:
        try:
            return await self._coordinator.join(request)
        except Exception as e:
            await _abort(context, e)
            raise

    async def StoreBackup(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.StoredBackup:
        try:
            await self._coordinator.store_backup(request)
        except Exception as e:
            await _abort(context, e)
        return coordinator_pb2.StoredBackup()

    async def FetchBackup(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.FetchedBackup:
        try:
            return await self._coordinator.fetch_backup(request)
        except Exception as e:
            await _abort(context, e)
            raise

    async def ClaimParty(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.ClaimedParty:
        try:
            self._coordinator.claim_party(request)
        except Exception as e:
            await _abort(context, e)
        return coordinator_pb2.ClaimedParty()

    async def SettleKeyChange(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.SettledKeyChange:
        try:
            return await self._coordinator.settle(request)
        except Exception as e:
            await _abort(context, e)
            raise

    async def AcknowledgeEpoch(
        self,
        request: coordinator_pb2.DeviceCall,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> coordinator_pb2.AcknowledgedEpoch:
        try:
            pruned = await self._coordinator.acknowledge(request)
        except Exception as e:
            await _abort(context, e)
            raise
        return coordinator_pb2.AcknowledgedEpoch(pruned=pruned)


async def create_server(
    address: str,
    coordinator: Coordinator,
    *,
    tls: ServerTls | None = None,
    health_servicer: AsyncHealthServicer | None = None,
) -> tuple[grpc.aio.Server, int]:
    """The coordinator's gRPC server (not started) and its bound port (0 for a Unix socket)."""
    server = grpc.aio.server()
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(  # type: ignore[no-untyped-call]
        CoordinatorServicer(coordinator), server
    )
    health_servicer = health_servicer or new_health_servicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = bind(server, address, tls)
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port
