"""Aegis: detection and response for attacks on AI workloads in Azure.

The core library. It knows nothing of Azure Functions: `handlers/` and the CLI drive it."""

__version__ = "0.1.0"
