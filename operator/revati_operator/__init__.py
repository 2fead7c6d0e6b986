"""The Kubernetes operator (kopf) for EmulatedDeployment and EmulationSweep resources.

Importable as revati.operator. It renders the same run that `revati run` performs locally
into CPU-only pods."""
