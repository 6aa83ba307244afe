"""Live updates: order status and product stock pushed over WebSocket (docs/live-updates.md).

`protocol` (pure messages), `state` (a channel's current state, read from PostgreSQL),
`session` (one client message handled, the same on the gateway and on AWS), `hub` (the
gateway process's sockets and fan-out), `connections` and `apigateway` (the AWS side: the
subscriptions table and posting through the API Gateway Management API).
"""
