"""Launching processes under the emulator: the shim's paths, the one environment builder,
process groups, the prediction sidecar's start-up and the collection of per-process stats."""
