"""The Starlette gateway: HTTP API, WebSocket endpoint, local hub and live feed."""
