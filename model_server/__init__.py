"""Model side of the swarm, in three layers whose imports go one way: contract ← model ← serving (← the commands,
swarm.trainer.commands).

- `choices` (the contract): torch-free closed sets, defaults and the CRD identity shared by the CLI, the operator and
  both packages below; it imports nothing from swarm. The operator imports nothing else of swarm.model_server.
- `model/` (the model library): backbone, delta rule, primary, specialists, fusion, knowledge sources, text and
  column encoding, the orchestrator policy. Imports the contract only.
- `serving/` (the serving runtime): the annotation and specialist gRPC servers, launcher, admission, codec, demand.
  Imports the contract and the model.

Package data: `domains.yaml` (domain → labels and knowledge sources) and `sotab_labels.txt` (the label set).
tests/foundation/test_layering.py enforces the direction.
"""
