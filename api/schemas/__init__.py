"""msgspec request/response schemas. Requests forbid unknown fields."""
