"""The sidecar starts whatever the depth of the run folder (a Unix socket path holds 107 bytes)."""

from __future__ import annotations

from revati.launch.sidecar import prediction_sidecar


def test_a_deep_run_folder_still_gets_a_sidecar(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with prediction_sidecar("h100-sxm", workdir=deep) as (endpoint, _):
        assert endpoint.startswith("ipc://") and len(endpoint) - len("ipc://") < 100
