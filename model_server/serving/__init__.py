"""The serving runtime: the annotation service (`annotation_server`, the annotators `annotator`,
`primary_annotator`), the specialist server and its client (`specialist_server`, `specialist_client`, the state wire
format `codec`), the shared gRPC runtime (`grpc_runtime`: TLS, health, readiness), admission control (`admission`),
the launcher that starts them (`launcher`), and the pod side of Kubernetes: asking the pool for cold specialists
(`demand`) through stdlib-only in-cluster API access (`incluster`).

May import: the contract (`swarm.model_server.choices`), the model library (`swarm.model_server.model`), the generated
gRPC stubs (`swarm.v1`) and third-party packages. Never `swarm.trainer`, `swarm.operator` or `swarm.client`
(tests/foundation/test_layering.py); the commands (swarm.trainer.commands) import this package, not the other way
round (the launcher starts the CLI as a subprocess, `python -m swarm.trainer.commands.cli`).
"""
