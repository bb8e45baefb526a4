"""Messaging: SMS and MMS, conversations, delivery status."""
