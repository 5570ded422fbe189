"""The AI estate: an inventory of AI accounts, projects and hubs from Azure Resource Graph, their
blind spots as findings, and what changed between refreshes (`refresh.py`; Azure: `azure.py`)."""
