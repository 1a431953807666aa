"""`manage.py runhandlers`: the process that runs the project's handlers (pubsub/handling.py).

execution.py is the database side of one message (a worker thread); time_limit.py
stops a sync handler over its time; declare.py declares the handlers' queues over
the broker's HTTP API; runner.py owns the WebSocket connection, the threads and
the retries.
"""
