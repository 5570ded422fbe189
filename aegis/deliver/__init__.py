"""Delivery: the incident where the SOC already works (Microsoft Sentinel, the SOC's Teams channel)."""
