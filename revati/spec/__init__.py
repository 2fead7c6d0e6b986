"""The run spec: one schema for `revati run SPEC` and for the EmulatedDeployment CRD.

Shaped like a Kubernetes object (apiVersion, kind, metadata, spec) so the operator reuses it
unchanged. Bad specs are rejected before anything starts, with messages that name the field
and say what is allowed (`load_spec`, `SpecError`). `crd_openapi_schema()` derives the CRD's
openAPIV3Schema from the same models, so the schema is never written twice.

revati.spec.sweep has the EmulationSweep models and the pure expand()/rank() the operator
uses; revati.spec.crds generates the CustomResourceDefinitions (`revati crds`).
"""

from __future__ import annotations

from revati.spec.schema import (
    API_VERSION,
    KIND,
    Arrival,
    Dataset,
    EmulatedDeployment,
    Emulation,
    Engine,
    shared_prefix_dataset,
)
from revati.spec.load import SpecError, crd_openapi_schema, load_spec, spec_from_dict, structural_schema

__all__ = [
    "API_VERSION", "KIND", "Arrival", "Dataset", "EmulatedDeployment", "Emulation", "Engine",
    "SpecError", "crd_openapi_schema", "load_spec", "shared_prefix_dataset", "spec_from_dict",
    "structural_schema",
]
