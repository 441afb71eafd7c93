"""Decisions about resident messages: classification, deadlines, threading; and the router service."""
