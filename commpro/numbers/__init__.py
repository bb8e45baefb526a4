"""Phone numbers owned by users, and their inbound routing."""
