"""Loopback fakes of the LLM HTTP APIs (Ollama, OpenAI, Anthropic) for the backend tests."""
