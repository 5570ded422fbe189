"""Enrichment and corroboration: what other sources (Log Analytics, Defender, Graph, the store itself)
say about an incident and about the evidence behind a disruptive step."""
