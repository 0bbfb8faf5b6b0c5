"""Kubernetes side of the swarm: CR models, CRD generation, kopf handlers, NVML budget and node agent."""
