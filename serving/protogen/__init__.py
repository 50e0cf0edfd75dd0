"""Generated gRPC modules (by `make protos` from protos/). Do not edit."""
