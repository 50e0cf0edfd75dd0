"""gRPC transport: OIP v2 GRPCInferenceService, the explain extension, health, reflection."""
