"""What the apps share: the API's error handler, schema pieces and JSON parser,
declaring a named row once, the MAX_QUEUES/MAX_BINDINGS check, the Django form
of the broker's name rule, and the admin's name-is-fixed mixin.

Imports the broker package and Django; no app.
"""
