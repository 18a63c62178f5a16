"""The gateway's operator side: ``operator.connect`` and the methods it unlocks.

Over TCP a connection becomes an operator with ``operator.connect {token}`` (compared in
constant time; wrong tokens are counted per connection and per address, and an address over
its limit is refused unseen). A connection on the state dir's Unix socket is an operator from
the start. Operators list, approve, reject and revoke; every decision they make is delivered
through :class:`~bot.gateway.relay.Relay` to whichever instance holds its node, the same path
as the owner chat's.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.core.models import NodeDecision, NodeVerdict
from bot.gateway.frames import Conn, ErrorCode, GatewayError, node_id_param, param
from bot.gateway.limits import AddressLimits, Attempt
from bot.gateway.peers import Peers
from bot.gateway.relay import Relay
from bot.services.nodes import NodeService

Method = Callable[[Conn, dict[str, Any]], Awaitable[Any]]


@dataclass(eq=False, kw_only=True)
class Operators:
    """Operator authentication and the operator methods, by method name.

    ``token`` is the operator token (None: operators only on the Unix socket); ``limits``
    counts wrong tokens per address across connections, in the budget of failed
    verifications the node methods share, and audits them.
    """

    nodes: NodeService
    peers: Peers
    relay: Relay
    token: str | None = field(repr=False)
    limits: AddressLimits

    def methods(self) -> dict[str, Method]:
        """``operator.connect`` and every method that needs it."""
        return {
            "operator.connect": self._operator_connect,
            "node.pair.list": self._operator(self._pair_list),
            "node.pair.approve": self._operator(self._pair_approve),
            "node.pair.reject": self._operator(self._pair_reject),
            "node.list": self._operator(self._node_list),
            "node.revoke": self._operator(self._node_revoke),
        }

    async def _operator_connect(self, conn: Conn, params: dict[str, Any]) -> dict[str, Any]:
        expected = self.token
        given = param(params, "token")
        if not expected:
            raise GatewayError(ErrorCode.UNAUTHORIZED, "operator access is not configured")
        try:
            await self.limits.admit(conn.remote, Attempt.OPERATOR)
        except GatewayError:
            conn.bad_tokens += 1
            raise
        if not hmac.compare_digest(given.encode(), expected.encode()):
            conn.bad_tokens += 1
            await self.limits.failed(conn.remote, Attempt.OPERATOR, "wrong_token", audited=False)
            raise GatewayError(ErrorCode.UNAUTHORIZED, "wrong operator token")
        conn.operator = True
        return {"role": "operator"}

    def _operator(self, method: Callable[[dict[str, Any]], Awaitable[Any]]) -> Method:
        async def guarded(conn: Conn, params: dict[str, Any]) -> Any:
            if not conn.operator:
                raise GatewayError(
                    ErrorCode.UNAUTHORIZED, "operator methods need operator.connect"
                )
            return await method(params)

        return guarded

    async def _pair_list(self, _params: dict[str, Any]) -> dict[str, Any]:
        pending = await asyncio.to_thread(self.nodes.pending)
        paired = await asyncio.to_thread(self.nodes.paired)
        return {"pending": [r.as_json() for r in pending], "paired": [n.as_json() for n in paired]}

    async def _node_list(self, _params: dict[str, Any]) -> dict[str, Any]:
        paired = await asyncio.to_thread(self.nodes.paired)
        connected = self.peers.connected_nodes()
        return {"nodes": [{**n.as_json(), "connected": n.node_id in connected} for n in paired]}

    async def _pair_approve(self, params: dict[str, Any]) -> dict[str, Any]:
        approval = await asyncio.to_thread(
            self.nodes.approve,
            param(params, "requestId"),
            actor=param(params, "actor", required=False) or "operator:gateway",
        )
        delivered = await self.relay.deliver_approval(approval)
        return {
            "nodeId": approval.node.node_id,
            "requestId": approval.request.request_id,
            "delivered": delivered,
        }

    async def _pair_reject(self, params: dict[str, Any]) -> dict[str, Any]:
        req = await asyncio.to_thread(
            self.nodes.reject,
            param(params, "requestId"),
            actor=param(params, "actor", required=False) or "operator:gateway",
        )
        await self.relay.deliver(NodeDecision.on_request(req, NodeVerdict.REJECTED))
        return {"requestId": req.request_id, "nodeId": req.node_id}

    async def _node_revoke(self, params: dict[str, Any]) -> dict[str, Any]:
        node = await asyncio.to_thread(
            self.nodes.revoke,
            node_id_param(params),
            actor=param(params, "actor", required=False) or "operator:gateway",
        )
        await self.relay.deliver(NodeDecision.revocation(node.node_id))
        return {"nodeId": node.node_id}
