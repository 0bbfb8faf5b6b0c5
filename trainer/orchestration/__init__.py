"""Training the orchestrator: the outcomes cache of a frozen primary, the environment that plays plans on it, PARL,
`swarm train --mode parl`, and the baselines PARL is compared with."""
