"""CommPro backend: calls and messages through Twilio, history in PostgreSQL."""

__version__ = "0.1.0"
