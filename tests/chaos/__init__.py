"""Faults: killed processes, lost messages, stalled services, and what Conveyor does about them."""
