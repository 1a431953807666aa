"""No models: subscriptions live in the runtime, not in the database."""
