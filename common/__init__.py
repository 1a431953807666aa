"""What the apps share: the API's error handler, schema pieces, JSON parser and
form-friendly boolean field, declaring a named row once, the MAX_QUEUES/MAX_BINDINGS
check, the Django form of the broker's name rule, and the admin's name-is-fixed mixin.

Imports the broker package and Django; no app.
"""
