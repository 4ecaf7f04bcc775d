"""Peer apps the service is compared with, run under uvicorn the way `contacts-api serve` runs the service."""
