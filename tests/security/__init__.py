"""Hostile input: what a user who means harm can send, and that nothing of it gets through."""
