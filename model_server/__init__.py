"""Model side of the swarm: the recurrent-state backbone, tokenizer, specialists, state codec and gRPC server."""
