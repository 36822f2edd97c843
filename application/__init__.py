"""Use cases: command services over the event store, authorisation, query ports."""
