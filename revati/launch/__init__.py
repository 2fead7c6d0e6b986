"""Launching processes under the emulator, for both runners (revati/run):

- paths.py: where the shim's libraries are;
- env.py: the one environment builder (a process's environment, a pod's env list);
- processes.py: process groups, kill_tree, a server started until its probe answers;
- sidecar.py: the prediction sidecar's start-up for a local process tree;
- bench.py: the load generator as a process, its progress and the load phase's clocks;
- stats.py, trace.py: the shim's per-process statistics and trace parts, collected;
- clock.py: the Timekeeper a local tree runs on (its own, or one it joins);
- shim_api.py: the functions of the shim that Python calls through ctypes.
"""
