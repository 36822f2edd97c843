"""Adapters: settings, PostgreSQL, NATS, embedded servers, security, built-in plugins."""
