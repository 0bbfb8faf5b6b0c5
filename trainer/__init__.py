"""Training side of the swarm: data/ (SOTAB, synthetic tables), training/ (the loop, metrics, specialist and primary
recipes), orchestration/ (PARL), release.py, reports.py, experiments/ and commands/ (the `swarm` CLI)."""
