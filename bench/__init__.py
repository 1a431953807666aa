"""Side-by-side benchmarks: our broker against RabbitMQ Web-STOMP.

Run `python -m bench --help`. Imports nothing from the broker's code: it talks
to `manage.py runbroker` over HTTP and WebSocket as users do. The one
exception runs in processes of its own: bench/outbox_worker.py is Django code
of the project, publishing from its transactions as an application would.
"""
