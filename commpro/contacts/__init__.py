"""Contacts: the people a user's conversations are with, their encrypted names and notes."""
