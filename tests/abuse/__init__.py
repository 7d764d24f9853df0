"""Abuse: what one signed-in account may consume, steer, write or read, and how the schema refuses the rest."""
