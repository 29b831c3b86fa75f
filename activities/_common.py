"""Helpers shared by activity classes."""

import os
import socket


def worker_identity() -> str:
    """`host:pid` of the worker process running the activity."""
    return f"{socket.gethostname()}:{os.getpid()}"
