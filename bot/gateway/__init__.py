"""The node gateway: the WebSocket server, its connection guard, and the client."""
