"""Test doubles that real external programs talk to (a fake OpenAI Responses API, ...)."""
