"""Helpers for the hardening tests (hostile requests, overload, drain, artifacts, access, soak)."""
