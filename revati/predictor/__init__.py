"""The duration predictor: profiles -> per-family LightGBM models -> microseconds per op.

Public entry points (the CLI calls these):
  Predictor.load(gpu) / Predictor.predict_us(ops)        revati.predictor.predictor
  evaluate(gpus, families) / print_report(report)        revati.predictor.evaluate
  predict_main(gpu, json_str=None, jsonl_path=None)      revati.predictor.predict_cmd
  profile_main(out_dir, gpu_key)                         revati.predictor.profiler
  train_main(gpus, out_dir=None)                         revati.predictor.predict_cmd
  build_profiles(src_root, out_root)                     revati.predictor.importers
"""

from revati.predictor.descriptor import DescriptorError, normalize
from revati.predictor.predictor import Predictor

__all__ = ["DescriptorError", "Predictor", "normalize"]
