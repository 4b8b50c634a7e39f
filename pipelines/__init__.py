"""Orchestrators above every stage: the quickstart (one recipe, every stage, selective vs full CoT) and
the controlled study (many students on synthetic traces). Only these import several stages."""
