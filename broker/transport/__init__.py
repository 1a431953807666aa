"""How clients reach the broker: the WebSocket session, runbroker's server and
WebSocket protocol, the fast HTTP publish path, health, origins and limits."""
