"""The original Go service's REST calls (`/ping`, `/exchanges`, `/queues`,
`/bindings`, `/publish`), kept working unchanged on top of the apps' services."""
