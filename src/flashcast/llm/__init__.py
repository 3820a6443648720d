"""Structured LLM calls behind one interface: ask for a JSON object matching a pydantic model.

Providers (OpenAI, Anthropic, any OpenAI-compatible server) only move text; `StructuredClient`
owns Flashcast's rules around them: containment (no personal data in prompts), one retry policy,
schema gating with bounded repair, a cache keyed by prompt and model, per-run caps, and a lineage
record for every call. When a provider cannot deliver, callers fall back to the offline path.
"""
