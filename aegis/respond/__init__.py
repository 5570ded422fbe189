"""Response: actions, playbooks and the response plan."""
