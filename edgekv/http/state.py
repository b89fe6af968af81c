"""Typed keys of the application and request state."""

from __future__ import annotations

from aiohttp import web

from edgekv.node import Node

NODE = web.AppKey("node", Node)
"""The node an app serves."""

PRINCIPAL = "edgekv.principal"
"""Request key of the authenticated :class:`~edgekv.auth.TokenSpec`."""
