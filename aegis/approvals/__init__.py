"""On-call approvals and the analyst console: who may decide (identity), the console and API
(web), the approvals timer (sweep) and the Teams cards (teams)."""
