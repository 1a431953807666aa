"""The event loop's owner: the `Runtime` around the engine, its group-commit
writer, topology changes and statistics. Imports the engine and the protocol."""
